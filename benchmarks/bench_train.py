"""The training target: `sbert train` with its defaults on STS-train, then STS-dev before and after.

    python benchmarks/bench_train.py                    # ../shared/data/stsb, work in a temp dir
    python benchmarks/bench_train.py --work /tmp/bench_train --json results.json

Runs as a user would, each step a fresh process:

    sbert similarity --pairs sts-dev.csv --text-columns 5,6 --gold-column 4            (base model)
    sbert train sts-train.csv --text-columns 5,6 --score-column 4 --score-range 0,5 -o MODEL
    sbert similarity --pairs sts-dev.csv ... --model MODEL                              (trained)

No `--eval` is given to the training run: choosing the epoch on sts-dev and then scoring on
sts-dev would flatter the result; with defaults the last epoch is kept. Prints the machine, the
training wall time and Spearman x100 before and after; exits 1 when a target is missed
(>= 88.0 after, <= 25 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _data import DEFAULT_DATA, require_file

ROOT = Path(__file__).resolve().parent.parent
STSB = DEFAULT_DATA / "stsb"
TARGET_SPEARMAN = 88.0
TARGET_MINUTES = 25.0


def machine() -> str:
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        flags = Path("/proc/cpuinfo").read_text()
        bf16 = "native bf16 (avx512_bf16)" if "avx512_bf16" in flags or "amx_bf16" in flags else "no native bf16"
    except OSError:
        bf16 = "bf16 unknown"
    return f"{name}, {os.cpu_count()} cores, {bf16}, {platform.system()} {platform.machine()}"


def sbert(*args: str) -> tuple[str, float]:
    cmd = [str(Path(sys.executable).with_name("sbert")), *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)  # progress stays on our stderr
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return proc.stdout, elapsed


def dev_spearman(dev: Path, model: str | None) -> float:
    args = ["similarity", "--pairs", str(dev), "--text-columns", "5,6", "--gold-column", "4"]
    args += ["--format", "json", "--device", "cpu", "--dtype", "fp32", "--quiet"]
    if model:
        args += ["--model", model]
    out, _ = sbert(*args)
    return json.loads(out)["spearman"] * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=STSB / "sts-train.csv")
    parser.add_argument("--dev", type=Path, default=STSB / "sts-dev.csv")
    parser.add_argument("--work", type=Path, help="where the model goes [default: a temp dir, removed]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_file(args.train, "STS-benchmark train pairs (--train FILE)")
    require_file(args.dev, "STS-benchmark dev pairs (--dev FILE)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        model = work / "sts-model"
        before = dev_spearman(args.dev, None)
        print(f"base all-MiniLM-L6-v2: STS-dev Spearman {before:.2f}", flush=True)
        train_args = ["train", str(args.train), "--text-columns", "5,6", "--score-column", "4"]
        out, seconds = sbert(*train_args, "--score-range", "0,5", "-o", str(model), "--format", "json")
        summary = json.loads(out)
        after = dev_spearman(args.dev, str(model))
        record = json.loads((model / "sbert-train.json").read_text())
    results = {
        "machine": machine(),
        "train_rows": summary["rows"],
        "steps": summary["steps"],
        "loss": record["loss_class"],
        "hyperparameters": record["hyperparameters"],
        "train_wall_s": round(seconds, 1),
        "dev_spearman_before": round(before, 2),
        "dev_spearman_after": round(after, 2),
    }
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    missed = []
    if after < TARGET_SPEARMAN:
        missed.append(f"Spearman {after:.2f} < {TARGET_SPEARMAN}")
    if seconds / 60 > TARGET_MINUTES:
        missed.append(f"{seconds / 60:.1f} min > {TARGET_MINUTES}")
    print("targets: " + ("met" if not missed else "MISSED: " + "; ".join(missed)))
    if missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
