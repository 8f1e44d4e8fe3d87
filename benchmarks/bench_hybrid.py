"""Benchmark `sbert search --mode dense|keyword|hybrid`: nDCG@10 and Recall@10 on a retrieval set
built from the shared data only.

    python benchmarks/bench_hybrid.py --work /tmp/bench_hybrid                 # sts-train (decides)
    python benchmarks/bench_hybrid.py --work /tmp/bench_hybrid_dev --sts ../shared/data/stsb/sts-dev.csv

Corpus: every distinct sentence of the STS file plus --distractors book paragraphs. Queries:
1. paraphrase: sentence1 of each pair scored >= 4; relevant: every sentence2 scored >= 4 with it.
2. name: a capitalized word (never written lower-case) found in 1 to 3 corpus documents; relevant:
   those documents.
3. rare word: a lower-case word of 6+ letters found in 1 or 2 documents; relevant: those.
A hit identical to its query text is dropped (the query's own sentence is in the corpus).
STS pairs scored >= 4 share most of their words, which flatters keyword search; the column
"low overlap" is the paraphrase queries sharing under half the words (3+ letters) of their
best-matching relevant sentence: the paraphrases that need meaning, not words.
Relevance is binary; nDCG@10 divides by the ideal DCG of min(relevant, 10) documents.

Every mode runs the library's own code: `Index.search_vectors` (HNSW, default ef), the keyword
index's `search`, and `fusion.fuse` at the depth `Index.search` uses.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus  # noqa: E402
from sbert_cli.retrieval import Index, build_index  # noqa: E402
from sbert_cli.retrieval.fusion import DEFAULT_RRF_K, FUSION_DEPTH, fuse, single  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WORD = re.compile(r"[A-Za-z]+")
STOP = set("about after again their there these those which while would could should other".split())


def read_sts(path: Path) -> list[tuple[float, str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(float(r[4]), r[5].strip(), r[6].strip()) for r in rows if len(r) >= 7]


def read_paragraphs(books: Path) -> list[str]:
    out = []
    for path in sorted(books.glob("*.txt")):
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


def build_queries(pairs, corpus: list[str], per_kind: int, seed: int) -> list[tuple[str, str, set[int]]]:
    """(kind, query, relevant corpus positions)."""
    position = {text: i for i, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = defaultdict(set)
    for score, s1, s2 in pairs:
        if score >= 4 and s1 and s2 and s1 != s2:
            relevant[s1].add(position[s2])
    queries = [("paraphrase", q, rel) for q, rel in relevant.items()]
    docs_of: dict[str, set[int]] = defaultdict(set)
    lower_seen: set[str] = set()
    written: dict[str, str] = {}
    for i, text in enumerate(corpus):
        for word in WORD.findall(text):
            docs_of[word.lower()].add(i)
            written.setdefault(word.lower(), word)
            if word.islower():
                lower_seen.add(word)
    names, rare = [], []
    for word, docs in docs_of.items():
        if len(word) >= 4 and word not in lower_seen and len(docs) <= 3:
            names.append(word)
        elif len(word) >= 6 and word in lower_seen and len(docs) <= 2 and word not in STOP:
            rare.append(word)
    rng = random.Random(seed)
    for kind, words in (("name", sorted(names)), ("rare word", sorted(rare))):
        for word in rng.sample(words, min(per_kind, len(words))):
            queries.append((kind, written[word], docs_of[word]))
    return queries


def overlap(query: str, relevant: set[int], corpus: list[str]) -> float:
    """The largest share of a relevant document's words (3+ letters) that the query has."""
    words = {w.lower() for w in WORD.findall(query) if len(w) >= 3}
    shares = []
    for doc in relevant:
        theirs = {w.lower() for w in WORD.findall(corpus[doc]) if len(w) >= 3}
        shares.append(len(words & theirs) / max(len(theirs), 1))
    return max(shares)


def ndcg_recall(ranked: list[int], relevant: set[int], k: int = 10) -> tuple[float, float]:
    gains = [1.0 / np.log2(r + 2) for r, doc in enumerate(ranked[:k]) if doc in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return sum(gains) / ideal, len(set(ranked[:k]) & relevant) / len(relevant)


def run_modes(index: Index, queries, id_to_pos: dict[int, int], corpus: list[str], systems) -> dict:
    texts = [q for _, q, _ in queries]
    depth = FUSION_DEPTH + 1  # one more: the query's own row is dropped
    started = time.perf_counter()
    vectors = index.encode(texts)
    print(f"encoded {len(texts)} queries in {time.perf_counter() - started:.1f} s")
    dense = index.search_vectors(vectors, depth)
    keyword = index.keyword_index().search(texts, depth)
    scores: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for qi, (kind, query, relevant) in enumerate(queries):
        d, kw = (dense[0][qi], dense[1][qi]), (keyword[0][qi], keyword[1][qi])
        # Drop the query's own text from each list before ranking, as a user would not count it.
        d = _without_self(d, id_to_pos, corpus, query)
        kw = _without_self(kw, id_to_pos, corpus, query)
        for name, how in systems.items():
            if how == "dense":
                ranked = single(*d, 10, "dense")
            elif how == "keyword":
                ranked = single(*kw, 10, "keyword")
            else:
                ranked = fuse(d, kw, 10, **how)
            m = ndcg_recall([id_to_pos[r.id] for r in ranked], relevant)
            scores[name][kind].append(m)
            scores[name]["all"].append(m)
            if kind == "paraphrase" and overlap(query, relevant, corpus) < 0.5:
                scores[name]["low overlap"].append(m)
    return scores


def _without_self(lists, id_to_pos, corpus, query):
    ids, values = lists
    keep = np.array([i < 0 or corpus[id_to_pos[int(i)]] != query for i in ids])
    return ids[keep], values[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sts", type=Path, default=DATA / "stsb" / "sts-train.csv")
    parser.add_argument("--books", type=Path, default=DATA / "books")
    parser.add_argument("--distractors", type=int, default=1500)
    parser.add_argument("--per-kind", type=int, default=200, help="Name and rare-word queries each.")
    parser.add_argument("--work", type=Path, default=None, help="Keep the store here (re-runs skip encoding).")
    args = parser.parse_args()
    from _data import require_file

    require_file(args.sts, "STS-benchmark pairs (--sts FILE)")
    if not any(args.books.glob("*.txt")):
        require_file(args.books / "*.txt", "book paragraphs, one per line (--books DIR)")

    pairs = read_sts(args.sts)
    sentences = list(dict.fromkeys(s for _, s1, s2 in pairs for s in (s1, s2) if s))
    known = set(sentences)
    paragraphs = read_paragraphs(args.books)
    distractors = [p for p in random.Random(1).sample(paragraphs, args.distractors) if p not in known]
    corpus = sentences + distractors
    queries = build_queries(pairs, corpus, args.per_kind, seed=2)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_hybrid-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus_file = work / "corpus.txt"
    corpus_file.write_text("".join(t.replace("\n", " ") + "\n" for t in corpus), encoding="utf-8")
    store = work / "corpus.store"
    started = time.perf_counter()
    encode_corpus([str(corpus_file)], store, EncodeOptions(device="cpu", dtype="fp32"))
    build_index(store)
    print(
        f"store: {len(corpus):,} documents ({len(sentences):,} sentences + {len(distractors):,} paragraphs), "
        f"encode + index {time.perf_counter() - started:.0f} s"
    )
    index = Index.open(store, device="cpu")
    id_to_pos = {int(i): n for n, i in enumerate(np.concatenate([ids for ids, _ in index.store.iter_embeddings()]))}
    systems = {
        "dense": "dense",
        "keyword (BM25)": "keyword",
        f"hybrid RRF k={DEFAULT_RRF_K} (default)": {"rrf_k": DEFAULT_RRF_K},
        "hybrid RRF k=10": {"rrf_k": 10},
        "hybrid alpha=0.3": {"alpha": 0.3},
        "hybrid alpha=0.5": {"alpha": 0.5},
        "hybrid alpha=0.7": {"alpha": 0.7},
    }
    scores = run_modes(index, queries, id_to_pos, corpus, systems)
    kinds = ["paraphrase", "low overlap", "name", "rare word", "all"]
    counts = {kind: len(scores["dense"][kind]) for kind in kinds}
    print(f"\nqueries: {', '.join(f'{kind} {counts[kind]}' for kind in kinds)}")
    print("| mode | " + " | ".join(f"{kind} nDCG@10 | R@10" for kind in kinds) + " |")
    print("|---|" + "---:|---:|" * len(kinds))
    for name in systems:
        cells = []
        for kind in kinds:
            values = np.array(scores[name][kind])
            cells += [f"{values[:, 0].mean():.4f}", f"{values[:, 1].mean():.4f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nstore in {work}")


if __name__ == "__main__":
    main()
