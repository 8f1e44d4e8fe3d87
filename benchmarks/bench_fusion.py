"""Hybrid fusions compared per query kind, on the split that chose them and on held-out sets:
RRF, convex combinations under several normalizations and alphas, query-adaptive weighting,
and the library's default, each at several candidate depths.

    python benchmarks/bench_fusion.py --data ../shared/data --work /tmp/fusion_bench

Sets (bench_hybrid.py builds the first two the same way):
* sts-train (chooses): every distinct STS-train sentence + 1,500 book paragraphs; queries:
  paraphrase (sentence1 of pairs scored >= 4), name (a capitalized word in 1 to 3 documents),
  rare word (a lower-case word of 6+ letters in 1 or 2 documents).
* sts-dev (reports): the same built from STS-dev.
* books (robustness only, never used to choose): 3,000 book paragraphs of 20+ words as
  documents; queries: "sentence" (a sentence of 8+ words lifted from one paragraph with a
  quarter of its words dropped; relevant: that paragraph), name and rare word as above.

Each query's dense (HNSW at its defaults) and keyword (BM25) lists are searched once, DEPTH deep,
and cached under --work with the query's best possible BM25 score (KeywordIndex.best_scores);
every system then fuses the first `depth` of each list with retrieval/fusion.py's own code.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_hybrid import build_queries, metrics, read_paragraphs, read_sts  # noqa: E402

from sbert_cli.retrieval.fusion import DEFAULT_RRF_K, FUSION_DEPTH, Fusion, fuse, single  # noqa: E402

DEPTH = 200  # cached per list; systems take the first `depth`
KINDS = ("paraphrase", "name", "rare word", "all")
SENTENCE = re.compile(r"[^.!?]+[.!?]")


def sts_set(data: Path, split: str, distractors: int = 1500, per_kind: int = 200):
    pairs = read_sts(data / "stsb" / f"{split}.csv")
    sentences = list(dict.fromkeys(s for _, s1, s2 in pairs for s in (s1, s2) if s))
    known = set(sentences)
    paragraphs = read_paragraphs(data / "books")
    corpus = sentences + [p for p in random.Random(1).sample(paragraphs, distractors) if p not in known]
    return corpus, build_queries(pairs, corpus, per_kind, seed=2)


def books_set(data: Path, docs: int = 3000, per_kind: int = 200, seed: int = 11):
    """Book paragraphs as documents; lifted-and-thinned sentences, names and rare words as queries."""
    paragraphs = list(dict.fromkeys(p for p in read_paragraphs(data / "books") if len(p.split()) >= 20))
    rng = random.Random(seed)
    corpus = rng.sample(paragraphs, docs)
    queries = build_queries([], corpus, per_kind, seed=seed)
    sentence_queries = []
    for pos in rng.sample(range(len(corpus)), len(corpus)):
        long = [s.strip() for s in SENTENCE.findall(corpus[pos]) if len(s.split()) >= 8]
        if not long:
            continue
        words = rng.choice(long).split()
        kept = [w for w in words if rng.random() >= 0.25]
        sentence_queries.append(("paraphrase", " ".join(kept), {pos}))
        if len(sentence_queries) == per_kind:
            break
    return corpus, sentence_queries + queries


def _store(corpus: list[str], folder: Path):
    """An indexed store of `corpus` under `folder`, encoded once; {row id: corpus position}."""
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.retrieval import Index, build_index

    store = folder / "corpus.store"
    if not (store / "manifest.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "corpus.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in corpus), encoding="utf-8")
        encode_corpus([str(folder / "corpus.txt")], store, EncodeOptions(device="cpu", dtype="fp32"))
        build_index(store)
    index = Index.open(store, device="cpu")
    id_to_pos = {}  # the corpus file has one text a line: line n is corpus[n - 1] (each chunk's too)
    for shard in index.store.shards:
        table = index.store.read_shard(shard, ["id", "line"])
        for i, line in zip(table.column("id").to_pylist(), table.column("line").to_pylist(), strict=True):
            id_to_pos[int(i)] = int(line) - 1
    if set(id_to_pos.values()) != set(range(len(corpus))):
        raise SystemExit(f"{store}: does not hold the set's {len(corpus)} texts; remove it to rebuild")
    return index, id_to_pos


def cached_lists(name: str, corpus, queries, work: Path):
    """[(dense (ids, scores), keyword (ids, scores), best BM25)] per query, the query's own text
    dropped, cached in WORK/NAME/lists-*.pkl."""
    key = hashlib.sha256(repr((corpus, [(k, q, sorted(r)) for k, q, r in queries], DEPTH)).encode()).hexdigest()[:12]
    cache = work / name / f"lists-{key}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    index, id_to_pos = _store(corpus, work / name)
    texts = [q for _, q, _ in queries]
    started = time.perf_counter()
    vectors = index.encode(texts)
    print(f"{name}: encoded {len(texts)} queries in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    dense = index.search_vectors(vectors, DEPTH + 1)
    keyword_index = index.keyword_index()
    keyword = keyword_index.search(texts, DEPTH + 1)
    best = keyword_index.best_scores(texts)
    out = []
    for q, text in enumerate(texts):
        lists = []
        for ids, scores in ((dense[0][q], dense[1][q]), (keyword[0][q], keyword[1][q])):
            # A long text's chunks are rows of their own: a text ranks by its best (first) row.
            seen: set[int] = set()
            keep = []
            for n, i in enumerate(ids):
                pos = id_to_pos.get(int(i), -1)
                if pos < 0 or (pos not in seen and corpus[pos] != text):
                    keep.append(n)
                    seen.add(pos)
            pos = np.array([id_to_pos.get(int(i), -1) for i in ids[keep]], dtype=np.int64)
            lists.append((pos[:DEPTH], scores[keep][:DEPTH]))
        out.append((lists[0], lists[1], float(best[q])))
    cache.write_bytes(pickle.dumps(out))
    return out


def run_system(system, lists, depth: int) -> list[int]:
    (d_ids, d_scores), (k_ids, k_scores), best = lists
    d, kw = (d_ids[:depth], d_scores[:depth]), (k_ids[:depth], k_scores[:depth])
    if system == "dense":
        return [r.id for r in single(*d, 10, "dense")]
    if system == "keyword":
        return [r.id for r in single(*kw, 10, "keyword")]
    return [r.id for r in fuse(d, kw, 10, fusion=system, keyword_best=best)]


def evaluate(systems: dict, queries, lists, depth: int) -> dict:
    """{system: {kind: (nDCG@10, MRR@10, R@10) means}}."""
    out = {}
    for name, system in systems.items():
        per_kind = defaultdict(list)
        for (kind, _, relevant), ql in zip(queries, lists, strict=True):
            m = metrics(run_system(system, ql, depth), relevant)
            per_kind[kind].append(m)
            per_kind["all"].append(m)
        out[name] = {kind: tuple(np.mean(v, axis=0)) for kind, v in per_kind.items()}
    return out


def systems_to_compare() -> dict:
    """The systems of the tables: single modes, RRF, convex under each normalization at a few
    alphas, the adaptive weight, and the library's default (Fusion())."""
    systems: dict = {"dense": "dense", "keyword (BM25)": "keyword", f"rrf k={DEFAULT_RRF_K}": Fusion("rrf")}
    grid = {
        "mm+tmm": (0.2, 0.3, 0.4, 0.5, 0.6),
        "minmax": (0.3, 0.5),
        "tmm": (0.3, 0.5),
        "z": (0.3, 0.4, 0.5),
        "dbsf": (0.2, 0.3, 0.4),
        "mm+best": (0.2, 0.4),
    }
    for norm, alphas in grid.items():
        for alpha in alphas:
            systems[f"convex {norm} alpha={alpha}"] = Fusion("convex", alpha=alpha, norm=norm)
    for norm in ("mm+tmm", "z", "dbsf"):
        systems[f"convex {norm} alpha=adaptive"] = Fusion("convex", alpha=None, norm=norm)
    systems["**default** " + Fusion().describe()] = Fusion()
    return systems


def meets_targets(scores: dict, name: str) -> bool:
    """Beats both single modes on all queries (nDCG@10 and MRR@10), MRR@10 within 1 point of
    dense on paraphrases and of keyword on rare words."""
    s, dense, keyword = scores[name], scores["dense"], scores["keyword (BM25)"]
    overall = all(s["all"][m] > max(dense["all"][m], keyword["all"][m]) for m in (0, 1))
    return (
        overall
        and s["paraphrase"][1] >= dense["paraphrase"][1] - 0.01
        and s["rare word"][1] >= keyword["rare word"][1] - 0.01
    )


def table(scores: dict, counts: dict) -> None:
    print("| system | " + " | ".join(f"{kind} ({counts[kind]})" for kind in KINDS) + " | targets |")
    print("|---|" + "---:|" * len(KINDS) + ":-:|")
    for name, per_kind in scores.items():
        cells = [" / ".join(f"{v:.3f}" for v in per_kind[kind]) for kind in KINDS]
        mark = "" if name in ("dense", "keyword (BM25)") else ("met" if meets_targets(scores, name) else "-")
        print(f"| {name} | " + " | ".join(cells) + f" | {mark} |")


def choose(scores: dict) -> str:
    """The rule the default was chosen by, on sts-train: among the fusions meeting every target,
    the best nDCG@10 over all queries."""
    met = [name for name in scores if name not in ("dense", "keyword (BM25)") and meets_targets(scores, name)]
    if not met:
        return "no fusion meets every target here"
    best = max(met, key=lambda name: scores[name]["all"][0])
    return f"{len(met)} fusions meet every target; best nDCG@10 over all of them: {best}"


def main() -> None:
    from _data import BOOKS, STS_DEV, STS_TRAIN, add_data_option, require

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(parser)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_fusion"), help="stores and cached lists")
    parser.add_argument("--sets", default="sts-train,sts-dev,books", help="which sets, comma-separated")
    parser.add_argument("--depths", default="30,50,100,200", help="candidate depths for the depth table")
    args = parser.parse_args()
    require(args.data, BOOKS, STS_TRAIN, STS_DEV)
    systems = systems_to_compare()
    for name in args.sets.split(","):
        corpus, queries = books_set(args.data) if name == "books" else sts_set(args.data, name)
        lists = cached_lists(name, corpus, queries, args.work)
        counts = defaultdict(int)
        for kind, _, _ in queries:
            counts[kind] += 1
        counts["all"] = len(queries)
        print(f"\n### {name}: {len(corpus):,} documents; nDCG@10 / MRR@10 / R@10, depth {FUSION_DEPTH}\n")
        scores = evaluate(systems, queries, lists, FUSION_DEPTH)
        table(scores, counts)
        print(f"\n{choose(scores)}\n\nDepth (candidates from each list), nDCG@10 / MRR@10 / R@10:\n")
        picked = {
            k: v
            for k, v in systems.items()
            if k.startswith(("rrf", "convex mm+tmm alpha=0.4", "convex dbsf alpha=0.3", "**default"))
        }
        depth_scores = {}
        for depth in (int(d) for d in args.depths.split(",")):
            for label, value in evaluate(picked, queries, lists, depth).items():
                depth_scores[f"{label}, depth {depth}"] = value
        table({**{k: scores[k] for k in ("dense", "keyword (BM25)")}, **depth_scores}, counts)


if __name__ == "__main__":
    main()
