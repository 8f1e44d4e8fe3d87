"""Evaluation: `retrieval` (BEIR files, pytrec_eval metrics) and `compare` (several models or
dtypes measured alike, with encode throughput). STS correlations come from `analysis.similarity`,
the same code `sbert similarity` runs."""
