"""Nightly `sbert encode DIR -o STORE --sync` on a folder of many files: what a night costs when
nothing changed and when 1% of the records changed, against the first night and a full re-encode;
and `sbert index` following the change against rebuilding it.

    python benchmarks/bench_sync.py                          # 1,000 files x 100 records, hash model
    python benchmarks/bench_sync.py --real-files 40 --real-records 25   # + the real model, smaller

Part 1 uses the hash stand-in model (tests/fakes.py, 384 dimensions: a real store's size on
disk) so that the file-count plumbing (planning, hashing, shard rewrites, manifest commits) is
what is measured on 100k records. Part 2 runs the real all-MiniLM-L6-v2 on a smaller folder,
where model time dominates. The corpus is paragraphs of ../shared/data/books (cut to 60 words),
each record made unique by its file and line; a "1% night" replaces a tenth of the records of a
tenth of the files (1,000 of 100,000) and leaves the others untouched. Times are wall and CPU seconds (user + sys of
the command, children included), each command a fresh process, as cron runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shared books beside the checkout (SBERT_BENCH_BOOKS elsewhere), else the sample corpus.
BOOKS = Path(os.environ.get("SBERT_BENCH_BOOKS", ROOT.parent / "shared" / "data" / "books"))
if not BOOKS.is_dir():
    BOOKS = ROOT / "sample_corpus"
WRAPPER = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from fakes import hash_factory
from sbert_cli.encoding.loader import ENCODER_FACTORIES
ENCODER_FACTORIES["hash"] = hash_factory
from sbert_cli.cli import main
sys.argv = ["sbert", *sys.argv[1:]]
main()
"""


def paragraphs() -> list[str]:
    return [
        " ".join(line.split()[:60])
        for book in sorted(BOOKS.glob("*.txt"))
        for line in book.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def make_folder(folder: Path, files: int, records: int, texts: list[str]) -> None:
    folder.mkdir(parents=True)
    for f in range(files):
        lines = [f"{texts[(f * records + i) % len(texts)]} ({f}.{i})" for i in range(records)]
        (folder / f"doc{f:04d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def change_one_percent(folder: Path, files: int, records: int, texts: list[str], seed: int = 0) -> int:
    """Edit 1% of the records: a tenth of the files, each with a tenth of its records replaced."""
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(files), max(1, files // 10)))
    per_file = min(records, max(1, files * records // 100 // len(chosen)))
    for f in chosen:
        path = folder / f"doc{f:04d}.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
        for i in rng.sample(range(len(lines)), per_file):
            lines[i] = f"{rng.choice(texts)} (edited {f}.{i})"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(chosen) * per_file


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, stderr


def step(out: dict, name: str, value) -> None:
    out[name] = value
    print(f"  {name}: {value}", flush=True)  # a long run shows each figure as it comes


def nights(
    sbert: list[str], work: Path, files: int, records: int, model: list[str], texts: list[str], index: list[str]
) -> dict:
    """The first night (everything new: the same work as a full re-encode, so it stands for one),
    the full index build, a night without change, a 1% night, the index update after it."""
    folder, store = work / "docs", work / "store"
    make_folder(folder, files, records, texts)
    out: dict = {"files": files, "records": files * records}
    encode = [*sbert, "encode", str(folder), "-o", str(store), "--sync", "-q"]
    step(out, "first_night", run([*encode, *model])[:2])
    step(out, "index_build", run([*sbert, "index", str(store), "--no-bm25", "-q", *index])[:2])
    wall, cpu, stderr = run([*encode[:-1], "-v"])
    assert "encoded" not in stderr.split("unchanged;")[-1], stderr  # nothing went through a model
    step(out, "no_change_night", (wall, cpu))
    step(out, "changed_records", change_one_percent(folder, files, records, texts))
    wall, cpu, stderr = run(encode[:-1])
    step(out, "one_percent_night", (wall, cpu))
    step(out, "one_percent_line", next(line for line in stderr.splitlines() if " new, ~" in line).split("; store")[0])
    step(out, "index_update", run([*sbert, "index", str(store), "--no-bm25", "-q"])[:2])
    return out


def report(name: str, r: dict) -> None:
    first, none, one = r["first_night"], r["no_change_night"], r["one_percent_night"]
    print(f"\n{name}: {r['files']:,} files, {r['records']:,} records; {r['one_percent_line']}")
    print("| run | wall s | CPU s | vs the first night = a full encode (wall, CPU) |")
    print("| --- | ---: | ---: | --- |")
    print(f"| first night (all new) | {first[0]:.1f} | {first[1]:.1f} | |")
    changed = f"night with {r['changed_records']:,} records changed"
    for label, (wall, cpu) in [("night without change", none), (changed, one)]:
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {wall / first[0]:.1%}, {cpu / first[1]:.1%} |")
    up, full = r["index_update"], r["index_build"]
    print(f"| `sbert index`, full build | {full[0]:.1f} | {full[1]:.1f} | |")
    print(
        f"| `sbert index` after the 1% night | {up[0]:.1f} | {up[1]:.1f} | vs the full build: "
        f"{up[0] / full[0]:.1%}, {up[1] / full[1]:.1%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000, help="files for the hash-model part (0: skip it)")
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--real-files", type=int, default=0, help="also run the real model on this many files")
    parser.add_argument("--real-records", type=int, default=25)
    parser.add_argument("--index-args", default="", help="extra `sbert index` options, e.g. '--M 16'")
    args = parser.parse_args()
    texts, index = paragraphs(), args.index_args.split()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "sbert_hash.py"
        wrapper.write_text(WRAPPER)
        if args.files:
            sbert, model = [sys.executable, str(wrapper)], ["--model", "hash:384"]
            results["hash"] = nights(sbert, Path(tmp) / "hash", args.files, args.records, model, texts, index)
            report("hash:384 model", results["hash"])
        if args.real_files:
            sbert, model = [sys.executable, "-m", "sbert_cli"], ["--device", "cpu", "--dtype", "fp32"]
            results["real"] = nights(sbert, Path(tmp) / "real", args.real_files, args.real_records, model, texts, index)
            report("all-MiniLM-L6-v2, fp32, CPU", results["real"])
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
