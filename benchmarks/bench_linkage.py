"""Agglomerative linkage: which default gives useful clusters of book paragraphs.

    python benchmarks/bench_linkage.py                      # 250 paragraphs of each book, k = 3, 5, 8
    python benchmarks/bench_linkage.py --data DIR --per-book 100 --k 3

Paragraphs are sampled (seed 0) from each novel in DATA/books/, encoded with `sbert encode` (the
default model) into a temporary store, and clustered exactly as `sbert cluster --method
agglomerative --linkage L --k K` clusters them (`agglomerative_labels` on the unit vectors), for
every linkage. For each: the largest cluster's share and the smallest cluster's size (a linkage
that leaves one giant cluster and singletons is useless to a reader), the normalized entropy of
the sizes (1 = equal sizes), the cosine silhouette (scikit-learn), and the V-measure against the
book each paragraph came from.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _data import BOOKS, add_data_option, require

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LINKAGES = ("ward", "average", "complete", "single")


def sample_paragraphs(books: Path, per_book: int, seed: int) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for book in sorted(books.glob("*.txt")):
        paragraphs = [line.strip() for line in book.read_text(encoding="utf-8").splitlines() if line.strip()]
        for text in random.Random(seed).sample(paragraphs, min(per_book, len(paragraphs))):
            texts.append(text)
            labels.append(book.stem)
    return texts, labels


def measure(vectors: np.ndarray, books: list[str], linkage: str, k: int) -> dict:
    from sklearn.metrics import silhouette_score, v_measure_score

    from sbert_cli.analysis.cluster.methods import agglomerative_labels

    labels = agglomerative_labels(vectors, k, linkage)
    sizes = np.bincount(labels, minlength=k)
    shares = sizes / sizes.sum()
    entropy = float(-(shares[shares > 0] * np.log(shares[shares > 0])).sum() / np.log(k))
    return {
        "linkage": linkage,
        "k": k,
        "sizes": sorted(sizes.tolist(), reverse=True),
        "largest": float(shares.max()),
        "smallest": int(sizes.min()),
        "entropy": entropy,
        "silhouette": float(silhouette_score(vectors, labels, metric="cosine")),
        "v_measure": float(v_measure_score(books, labels)),
    }


def encode(texts: list[str], tmp: Path) -> np.ndarray:
    from sbert_cli.analysis.similarity import unit_rows
    from sbert_cli.store.store import Store

    corpus, store = tmp / "paragraphs.txt", tmp / "store"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    sbert = str(Path(sys.executable).with_name("sbert"))
    subprocess.run([sbert, "encode", str(corpus), "-o", str(store), "--quiet"], check=True)
    return unit_rows(Store.open(store).load_embeddings()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(parser)
    parser.add_argument("--per-book", type=int, default=250)
    parser.add_argument("--k", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require(args.data, BOOKS)
    texts, labels = sample_paragraphs(args.data / "books", args.per_book, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-linkage-") as tmp:
        started = time.perf_counter()
        vectors = encode(texts, Path(tmp))
        encode_s = time.perf_counter() - started
    print(f"{len(texts):,} paragraphs of {len(set(labels))} books (encoded in {encode_s:.1f} s)")
    print(
        f"{'linkage':<9}{'k':>3} {'largest':>8} {'smallest':>9} {'entropy':>8} {'silhouette':>11} {'V-measure':>10}  sizes"
    )
    for k in args.k:
        for linkage in LINKAGES:
            r = measure(vectors, labels, linkage, k)
            print(
                f"{linkage:<9}{k:>3} {r['largest']:>8.1%} {r['smallest']:>9} {r['entropy']:>8.3f} "
                f"{r['silhouette']:>11.3f} {r['v_measure']:>10.3f}  {r['sizes']}"
            )


if __name__ == "__main__":
    main()
