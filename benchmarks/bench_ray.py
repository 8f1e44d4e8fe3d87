"""`sbert encode` vs `sbert encode --ray` on this machine: what Ray costs, and the driver's ceilings.

    python benchmarks/bench_ray.py                    # 1,500 paragraphs, shards of 250: local, --ray, --ray-workers 1
    python benchmarks/bench_ray.py --texts 4000 --shard-size 500
    python benchmarks/bench_ray.py --texts 400 --shard-size 100 --max-seq-length 8   # ~no model work: Ray's fixed cost
    python benchmarks/bench_ray.py --driver-only      # no model: driver read/plan rate, manifest commit cost

Part 1 runs each contender as a fresh process on the same corpus (War and Peace paragraphs from
../shared/data/books, all-MiniLM-L6-v2 fp32): start-up, model load and writing included. The
Ray runs start a private local runtime (its start-up and the workers' model loads are reported
apart). Every Ray store is checked against the local one: same ids, texts and shards, and the
minimum cosine of the vectors.

Part 2 measures what limits the driver on a cluster, where the model runs elsewhere: how fast it
reads and groups lines into shard tasks (and how many bytes a task ships), and what one manifest
commit costs as the store grows (`docs/scaling.md` uses these figures).
"""

from __future__ import annotations

import argparse
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _data import BOOKS as NEEDS_BOOKS
from _data import DEFAULT_DATA, add_data_option, require

ROOT = Path(__file__).resolve().parent.parent
BOOKS = DEFAULT_DATA / "books"  # --data DIR sets it
sys.path.insert(0, str(ROOT))


def paragraphs() -> list[str]:
    return [
        line.strip()
        for book in sorted(BOOKS.glob("*.txt"))
        for line in book.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def run(name: str, args: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sbert_cli", "encode", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    ready = re.search(r"ready in ([\d.]+) s", proc.stderr)
    stages = re.search(r"stages: (.*)", proc.stderr)
    return {
        "run": name,
        "wall": wall,
        "ready": float(ready.group(1)) if ready else None,
        "stages": stages.group(1) if stages else "",
    }


def compare(ray_store: Path, local_store: Path) -> tuple[bool, float]:
    from sbert_cli.store.store import Store

    a, b = Store.open(ray_store), Store.open(local_store)
    same = [(s.file, s.rows, s.id_min, s.id_max) for s in a.shards] == [
        (s.file, s.rows, s.id_min, s.id_max) for s in b.shards
    ]
    ids_a, va = a.load_embeddings()
    ids_b, vb = b.load_embeddings()
    same = same and bool((ids_a == ids_b).all())
    cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    return same, float(cos.min())


def end_to_end(texts: int, shard_size: int, max_seq_length: int | None, work: Path) -> None:
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(paragraphs()[:texts]) + "\n", encoding="utf-8")
    common = [str(corpus), "--dtype", "fp32", "--device", "cpu", "--shard-size", str(shard_size)]
    common += ["--max-seq-length", str(max_seq_length)] if max_seq_length else []
    runs = {
        "local (torch, 2 threads)": [],
        "--ray (2 workers x 1 thread)": ["--ray"],
        "--ray --ray-workers 1 (1 x 2 threads)": ["--ray", "--ray-workers", "1"],
    }
    results, stores = [], {}
    for name, extra in runs.items():
        stores[name] = work / f"store-{len(stores)}"
        results.append(run(name, [*common, *extra, "-o", str(stores[name])]))
        print(f"  {name}: {results[-1]['wall']:.1f} s", file=sys.stderr)
    local = stores[next(iter(runs))]
    base = results[0]["wall"]
    cut = f", --max-seq-length {max_seq_length}" if max_seq_length else ""
    print(
        f"\n{texts:,} paragraphs, shards of {shard_size} ({-(-texts // shard_size)} shards), all-MiniLM-L6-v2 fp32{cut}\n"
    )
    print("| run | wall s | x local | Ray start + model load s | same ids/shards | min cosine vs local |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for result, (name, store) in zip(results, stores.items(), strict=True):
        same, cos = compare(store, local) if store != local else (True, 1.0)
        ready = f"{result['ready']:.1f}" if result["ready"] is not None else "-"
        print(f"| {name} | {result['wall']:.1f} | {result['wall'] / base:.2f} | {ready} | {same} | {cos:.6f} |")
    for result in results:
        print(f"\n{result['run']} stages: {result['stages']}")


def driver_only(lines: int, shard_size: int, work: Path) -> None:
    """The driver's own work per line and per shard, with no model anywhere."""
    from sbert_cli.distributed.ray_encode import _shard_tasks
    from sbert_cli.encoding.plan import plan_inputs
    from sbert_cli.encoding.runner import EncodeOptions
    from sbert_cli.inputs.reader import expand_inputs, scan
    from sbert_cli.store.manifest import ModelRecord, ShardInfo, StoreManifest

    corpus = work / "big.txt"
    source = paragraphs()
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(source[i % len(source)] + "\n")
    record = ModelRecord("m", "f", 384, ["mean"], True, 256, "fp32")
    manifest = StoreManifest(record, shard_size=shard_size)
    plan = plan_inputs(expand_inputs([str(corpus)]), manifest, False, lambda _: None)
    options = EncodeOptions(shard_size=shard_size)
    start = time.perf_counter()
    scan(plan[0].source, options.read)
    scanned = time.perf_counter() - start
    start, shipped, tasks = time.perf_counter(), 0, 0
    for _item, task in _shard_tasks(plan, options, {}, work, manifest):
        if task is not None:
            shipped += len(pickle.dumps(task, protocol=5))
            tasks += 1
    took = time.perf_counter() - start
    size = corpus.stat().st_size
    print(
        f"\ndriver read + plan + pickle: {lines:,} lines ({size / 1e6:.0f} MB) in {took:.1f} s = {lines / took:,.0f} lines/s, "
        f"{size / 1e6 / took:.0f} MB/s; {tasks} tasks of {shard_size:,} rows, {shipped / tasks / 1e6:.1f} MB each"
    )
    print(f"validation scan (every input is read once before a run starts): {lines / scanned:,.0f} lines/s")
    print("\n| shards listed | manifest bytes | one commit (save) ms | commits/s |")
    print("| ---: | ---: | ---: | ---: |")
    store = work / "manifest-store"
    store.mkdir(exist_ok=True)
    for count in (1_000, 5_000, 20_000):
        manifest.shards = [
            ShardInfo(f"shards/part-00000-{i:05d}.parquet", 0, i, shard_size, i, i, "sha256:" + "0" * 64, 30_000_000)
            for i in range(count)
        ]
        manifest.save(store)
        start = time.perf_counter()
        for _ in range(5):
            manifest.save(store)
        each = (time.perf_counter() - start) / 5
        print(f"| {count:,} | {(store / 'manifest.json').stat().st_size:,} | {each * 1000:.0f} | {1 / each:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--max-seq-length", type=int, help="small values leave Ray's own cost")
    parser.add_argument("--driver-only", action="store_true")
    parser.add_argument("--no-driver", action="store_true", help="skip part 2")
    parser.add_argument("--driver-lines", type=int, default=200_000)
    add_data_option(parser)
    args = parser.parse_args()
    require(args.data, NEEDS_BOOKS)
    global BOOKS
    BOOKS = args.data / "books"
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        if not args.driver_only:
            end_to_end(args.texts, args.shard_size, args.max_seq_length, Path(tmp))
        if not args.no_driver:
            driver_only(args.driver_lines, 20_000, Path(tmp))


if __name__ == "__main__":
    main()
