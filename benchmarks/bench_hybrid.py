"""Benchmark `sbert search --mode dense|keyword|hybrid` and the hybrid fusions: nDCG@10, MRR@10 and
Recall@10 per query kind, on a retrieval set built from the shared data only.

    python benchmarks/bench_hybrid.py --data ../shared/data --split sts-train --work /tmp/bh_train  # chooses
    python benchmarks/bench_hybrid.py --data ../shared/data --split sts-dev --work /tmp/bh_dev      # reports

Corpus: every distinct sentence of the STS split plus --distractors book paragraphs. Queries:
1. paraphrase: sentence1 of each pair scored >= 4; relevant: every sentence2 scored >= 4 with it.
2. name: a capitalized word (never written lower-case) found in 1 to 3 corpus documents; relevant:
   those documents.
3. rare word: a lower-case word of 6+ letters found in 1 or 2 documents; relevant: those.
A hit identical to its query text is dropped (the query's own sentence is in the corpus).
STS pairs scored >= 4 share most of their words, which flatters keyword search; the column
"low overlap" is the paraphrase queries sharing under half the words (3+ letters) of their
best-matching relevant sentence: the paraphrases that need meaning, not words.
Relevance is binary; nDCG@10 divides by the ideal DCG of min(relevant, 10) documents.

Systems: dense, keyword (BM25), RRF (k=60), convex combinations with three normalizations
(min-max for both lists; "tmm", theoretical minimum for both: cosine from -1, BM25 from 0; and
"mm+tmm", min-max for the dense list and BM25 / its max) at several alpha, and the library's
default. The last line names the mm+tmm alpha this split would choose (the 1-point MRR@10
targets against dense on paraphrases and keyword on rare words first, then nDCG@10 over all):
the default was chosen on sts-train and is reported on sts-dev, never tuned on the split it is
judged on.

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
from sbert_cli.retrieval.fusion import DEFAULT_RRF_K, FUSION_DEPTH, Fusion, fuse, single  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
DEFAULT = Fusion()  # the library's default fusion
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


def metrics(ranked: list[int], relevant: set[int], k: int = 10) -> tuple[float, float, float]:
    """nDCG@k, MRR@k and Recall@k of one ranking (binary relevance)."""
    gains = [1.0 / np.log2(r + 2) for r, doc in enumerate(ranked[:k]) if doc in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    first = next((r for r, doc in enumerate(ranked[:k]) if doc in relevant), None)
    mrr = 0.0 if first is None else 1.0 / (first + 1)
    return sum(gains) / ideal, mrr, len(set(ranked[:k]) & relevant) / len(relevant)


def candidate_lists(index: Index, queries, id_to_pos, corpus) -> list[tuple[tuple, tuple]]:
    """Each query's dense and keyword lists, FUSION_DEPTH deep, the query's own text dropped."""
    texts = [q for _, q, _ in queries]
    depth = FUSION_DEPTH + 1  # one more: the query's own row is dropped
    started = time.perf_counter()
    vectors = index.encode(texts)
    print(f"encoded {len(texts)} queries in {time.perf_counter() - started:.1f} s")
    dense = index.search_vectors(vectors, depth)
    keyword = index.keyword_index().search(texts, depth)
    out = []
    for qi, query in enumerate(texts):
        d = _without_self((dense[0][qi], dense[1][qi]), id_to_pos, corpus, query)
        kw = _without_self((keyword[0][qi], keyword[1][qi]), id_to_pos, corpus, query)
        out.append((d, kw))
    return out


def score_systems(lists, queries, id_to_pos, corpus, systems: dict) -> dict:
    """{system: {kind: [(ndcg, mrr, recall), ...]}} over the queries."""
    scores: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    low = [kind == "paraphrase" and overlap(q, rel, corpus) < 0.5 for kind, q, rel in queries]
    for (kind, _, relevant), (d, kw), is_low in zip(queries, lists, low, strict=True):
        for name, how in systems.items():
            if how == "dense":
                ranked = single(*d, 10, "dense")
            elif how == "keyword":
                ranked = single(*kw, 10, "keyword")
            else:
                ranked = fuse(d, kw, 10, fusion=how)
            m = metrics([id_to_pos[r.id] for r in ranked], relevant)
            scores[name][kind].append(m)
            scores[name]["all"].append(m)
            if is_low:
                scores[name]["low overlap"].append(m)
    return scores


def _without_self(lists, id_to_pos, corpus, query):
    ids, values = lists
    keep = np.array([i < 0 or corpus[id_to_pos[int(i)]] != query for i in ids])
    return ids[keep], values[keep]


def systems_to_compare() -> dict:
    systems: dict = {"dense": "dense", "keyword (BM25)": "keyword"}
    systems[f"hybrid rrf k={DEFAULT_RRF_K}"] = Fusion("rrf", rrf_k=DEFAULT_RRF_K)
    for alpha in (0.3, 0.5, 0.7):
        systems[f"hybrid convex min-max alpha={alpha}"] = Fusion("convex", alpha=alpha, norm="minmax")
    for alpha in (0.3, 0.5):
        systems[f"hybrid convex tmm alpha={alpha}"] = Fusion("convex", alpha=alpha, norm="tmm")
    for alpha in ALPHAS:
        systems[f"hybrid convex mm+tmm alpha={alpha}"] = Fusion("convex", alpha=alpha, norm="mm+tmm")
    systems["**default** " + DEFAULT.describe()] = DEFAULT
    return systems


def mean(values, column: int) -> float:
    return float(np.mean([v[column] for v in values])) if values else float("nan")


def choose(scores: dict) -> str:
    """The mm+tmm alpha the targets favour: within 1 MRR@10 point of dense on paraphrases and of
    keyword on rare words, then the best nDCG@10 over all queries."""
    dense_p, keyword_r = mean(scores["dense"]["paraphrase"], 1), mean(scores["keyword (BM25)"]["rare word"], 1)
    best = None
    for alpha in ALPHAS:
        s = scores[f"hybrid convex mm+tmm alpha={alpha}"]
        ok = mean(s["paraphrase"], 1) >= dense_p - 0.01 and mean(s["rare word"], 1) >= keyword_r - 0.01
        key = (ok, mean(s["all"], 0))
        if best is None or key > best[0]:
            best = (key, alpha)
    (ok, ndcg), alpha = best
    return f"choice on this split: mm+tmm alpha={alpha} (all nDCG@10 {ndcg:.4f}; both 1-point targets {'met' if ok else 'NOT met'})"


def report(scores: dict, systems: dict) -> None:
    kinds = ["paraphrase", "low overlap", "name", "rare word", "all"]
    counts = {kind: len(scores["dense"][kind]) for kind in kinds}
    print(f"\nqueries: {', '.join(f'{kind} {counts[kind]}' for kind in kinds)}")
    print("nDCG@10 / MRR@10 / R@10 per query kind")
    print("| system | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for name in systems:
        cells = [" / ".join(f"{mean(scores[name][kind], c):.3f}" for c in range(3)) for kind in kinds]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(choose(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="The shared data folder (stsb/, books/).")
    parser.add_argument(
        "--split", default="sts-train", help="STS file under DATA/stsb (sts-train chooses, sts-dev reports)."
    )
    parser.add_argument("--distractors", type=int, default=1500)
    parser.add_argument("--per-kind", type=int, default=200, help="Name and rare-word queries each.")
    parser.add_argument("--work", type=Path, default=None, help="Keep the store here (re-runs skip encoding).")
    args = parser.parse_args()
    from _data import require_file

    sts, books = args.data / "stsb" / f"{args.split}.csv", args.data / "books"
    require_file(sts, "STS-benchmark pairs (--data DIR)")
    if not any(books.glob("*.txt")):
        require_file(books / "*.txt", "book paragraphs, one per line (--data DIR)")

    pairs = read_sts(sts)
    sentences = list(dict.fromkeys(s for _, s1, s2 in pairs for s in (s1, s2) if s))
    known = set(sentences)
    paragraphs = read_paragraphs(books)
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
        f"{args.split}: {len(corpus):,} documents ({len(sentences):,} sentences + {len(distractors):,} paragraphs), "
        f"encode + index {time.perf_counter() - started:.0f} s"
    )
    index = Index.open(store, device="cpu")
    id_to_pos = {int(i): n for n, i in enumerate(np.concatenate([ids for ids, _ in index.store.iter_embeddings()]))}
    lists = candidate_lists(index, queries, id_to_pos, corpus)
    systems = systems_to_compare()
    report(score_systems(lists, queries, id_to_pos, corpus, systems), systems)
    print(f"\nstore in {work}")


if __name__ == "__main__":
    main()
