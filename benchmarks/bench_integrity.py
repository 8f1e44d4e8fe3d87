"""Benchmark the cost of verified reads (issue 19): every shard, graph and index file hashed
(xxh3) as it is loaded, against the same reads unverified (the code before, patched back in).

    python benchmarks/bench_integrity.py                       # 1M-row exact search, 100k-row start-up
    python benchmarks/bench_integrity.py --rows 200000 --startup-rows 20000 --rounds 3   # quicker

Stores are synthetic (random unit vectors, dim 384 as all-MiniLM-L6-v2's, short texts, shards of
20,000 rows, written by sbert's own shard writer) and kept in --work between runs.

1. Exact search: `Index.open(store, exact=True)` and 8 queries, k=10, over every row.
2. Search start-up: open the store and its HNSW graph (M=16, ef_construction=64: a graph built
   quickly on 2 cores; the file is what is hashed, its shape does not matter), one query, fetch
   the hits' rows: what `sbert search` does before printing, less encoding the query; in one
   process (the strict figure: the reads alone), and as whole processes (imports included: what
   a user waits for).

One process per task runs it --rounds times in each mode, alternating (after an untimed run of
each, which warms the page cache and lazy imports); before each verified run the process forgets
what it verified, so every file is hashed again, as in the first search of a process. Reported:
median and minimum wall and CPU seconds (process time, all threads) and the verified runs'
overhead on the medians. The machine is shared: the load average is printed beside the figures,
and CPU seconds move less with it than wall seconds do. Where the load hides a difference this
small, the last rows measure the work verification adds directly: hashing the same files as a
read does, alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
SHARD_ROWS = 20_000


def make_store(path: Path, rows: int) -> None:
    """A store of `rows` random unit vectors, written by sbert's writer (checksums included)."""
    from sbert_cli.inputs.reader import Record
    from sbert_cli.store.manifest import InputEntry, ModelRecord, StoreManifest
    from sbert_cli.store.writer import ShardCommitter

    model = ModelRecord("bench:384", "bench-v1:384", DIM, ["mean"], True, 256, "fp32", backend="bench")
    manifest = StoreManifest(model, shard_size=SHARD_ROWS)
    entry = InputEntry(0, "synthetic.txt", None, None, None, "txt")
    manifest.inputs.append(entry)
    path.mkdir(parents=True)
    manifest.save(path)
    committer = ShardCommitter(path, manifest, entry, SHARD_ROWS)
    rng = np.random.default_rng(0)
    for start in range(0, rows, SHARD_ROWS):
        n = min(SHARD_ROWS, rows - start)
        vectors = rng.standard_normal((n, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [Record(start + i + 1, f"synthetic paragraph number {start + i}") for i in range(n)]
        committer.add(records, vectors)
    committer.commit()
    entry.complete = True
    manifest.save(path)


def unverified_reads() -> dict:
    """The reads as they were before verification, to patch in: shards read by path, index files
    checked by size only, fetches without page CRCs."""
    import pyarrow.parquet as pq

    from sbert_cli.store.integrity import check_present, expected_of

    def read_shard(self, shard, columns=None):
        return pq.read_table(self.shard_path(shard), columns=columns)

    def read_rows(self, shard, columns, row_ids):
        return pq.read_table(self.shard_path(shard), columns=columns, filters=[("id", "in", row_ids)])

    def check_index_file(path, record, store_path):
        check_present(path, expected_of(record, "index file", ""))
        return path

    return {"read_shard": read_shard, "read_rows": read_rows, "check_index_file": check_index_file}


def use(mode: str, saved: dict) -> None:
    """Switch this process's reads to `mode`; a verified run starts with nothing verified, as the
    first search of a process does."""
    from sbert_cli.retrieval import graph
    from sbert_cli.store import integrity
    from sbert_cli.store.store import Store

    funcs = saved["unverified"] if mode == "unverified" else saved["verified"]
    Store.read_shard, Store.read_rows = funcs["read_shard"], funcs["read_rows"]
    graph.check_index_file = funcs["check_index_file"]
    integrity.forget_verified()


def child(task: str, path: str, rounds: int, mode: str | None = None) -> None:
    """All runs of one task in one process, verified and unverified alternating (after an untimed
    run of each): prints one {"mode", "wall", "cpu"} line per run."""
    from sbert_cli.retrieval import Index, graph
    from sbert_cli.store.store import Store

    saved = {
        "verified": {
            "read_shard": Store.read_shard,
            "read_rows": Store.read_rows,
            "check_index_file": graph.check_index_file,
        },
        "unverified": unverified_reads(),
    }
    queries = np.random.default_rng(1).standard_normal((8 if task == "exact" else 1, DIM), dtype=np.float32)

    def once() -> None:
        if task == "exact":
            Index.open(path, exact=True).search_vectors(queries, k=10)
        else:
            index = Index.open(path)
            ids, _ = index.search_vectors(queries, k=10)
            index.store.fetch(ids[0])

    if mode is not None:  # one run, timed from outside: the whole process, imports included
        use(mode, saved)
        once()
        return
    for r in range(rounds + 1):
        for mode in ("verified", "unverified") if r % 2 == 0 else ("unverified", "verified"):
            use(mode, saved)
            wall, cpu = time.perf_counter(), time.process_time()
            once()
            if r:  # round 0 warms caches and lazy imports
                print(json.dumps({"mode": mode, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))


def measure(task: str, path: Path, rounds: int) -> dict[str, list[dict]]:
    command = [sys.executable, __file__, "--child", task, str(path), str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    results: dict[str, list[dict]] = {"verified": [], "unverified": []}
    for line in done.stdout.strip().splitlines():
        run = json.loads(line)
        results[run.pop("mode")].append(run)
    return results


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {platform.python_version()}"


def measure_processes(path: Path, rounds: int) -> dict[str, list[dict]]:
    """`sbert search`'s start-up as a user meets it: a fresh process per run, from interpreter
    start to the fetched hits; wall seconds, and CPU seconds of the child (rusage)."""
    results: dict[str, list[dict]] = {"verified": [], "unverified": []}
    for r in range(rounds + 1):
        for mode in ("verified", "unverified") if r % 2 == 0 else ("unverified", "verified"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.perf_counter()
            command = [sys.executable, __file__, "--child", "startup", str(path), "0", mode]
            subprocess.run(command, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if r:
                results[mode].append({"wall": time.perf_counter() - wall, "cpu": cpu})
    return results


def hash_cost(paths: list[Path], rounds: int) -> tuple[float, float]:
    """CPU and wall seconds (medians of `rounds`) of the work verification adds: hashing `paths`
    the way a read does (memory-mapped, xxh3, large blocks), pages cached."""
    from sbert_cli.store.integrity import _with_map, hash_view

    cpus, walls = [], []
    for _ in range(rounds + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        for path in paths:
            _with_map(path, lambda view: hash_view(view, sha=False))
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(cpus[1:]), statistics.median(walls[1:])


def report(name: str, results: dict[str, list[dict]]) -> None:
    medians = {}
    for mode, runs in results.items():
        walls, cpus = [r["wall"] for r in runs], [r["cpu"] for r in runs]
        medians[mode] = (statistics.median(walls), statistics.median(cpus))
        print(
            f"| {name} | {mode} | {medians[mode][0]:.3f} | {min(walls):.3f} | {medians[mode][1]:.3f} | {min(cpus):.3f} |"
        )
    wall = medians["verified"][0] / medians["unverified"][0] - 1
    cpu = medians["verified"][1] / medians["unverified"][1] - 1
    print(f"| {name} | overhead (medians) | {wall:+.1%} | | {cpu:+.1%} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the exact-search store")
    parser.add_argument("--startup-rows", type=int, default=100_000, help="rows of the indexed store")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["exact", "startup", "process", "hash"],
        choices=["exact", "startup", "process", "hash"],
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sbert-bench-integrity"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), *args.child[3:])
        return
    from sbert_cli.retrieval import build_index

    exact_store = args.work / f"exact-{args.rows}"
    startup_store = args.work / f"startup-{args.startup_rows}"
    for path, rows in ((exact_store, args.rows), (startup_store, args.startup_rows)):
        if not path.exists():
            started = time.perf_counter()
            make_store(path, rows)
            print(f"made {path} ({rows:,} rows) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not (startup_store / "index" / "index.json").exists():
        started = time.perf_counter()
        build_index(startup_store, M=16, ef_construction=64, bm25=False)
        print(f"indexed {startup_store} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    size = sum(f.stat().st_size for f in exact_store.rglob("*.parquet")) / 1e9
    graph = sum(f.stat().st_size for f in (startup_store / "index").glob("*.bin")) / 1e6
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"exact: {args.rows:,} rows, {size:.2f} GB of shards; start-up: {args.startup_rows:,} rows, graph {graph:.0f} MB"
    )
    tasks = set(args.tasks)
    print("| task | reads | wall s (median) | wall s (min) | CPU s (median) | CPU s (min) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    if "exact" in tasks:
        report(f"exact search, {args.rows:,} rows, 8 queries", measure("exact", exact_store, args.rounds))
    if "startup" in tasks:
        report(f"search start-up, {args.startup_rows:,} rows", measure("startup", startup_store, args.rounds))
    if "process" in tasks:
        name = f"search start-up, whole process, {args.startup_rows:,} rows"
        report(name, measure_processes(startup_store, args.rounds))
    if "hash" in tasks:
        for name, paths in (
            (f"hashing the {args.rows:,}-row store's shards", sorted(exact_store.rglob("*.parquet"))),
            (f"hashing the {args.startup_rows:,}-row graph", sorted((startup_store / "index").glob("*.bin"))),
        ):
            cpu, wall = hash_cost(paths, args.rounds)
            size = sum(p.stat().st_size for p in paths) / 1e9
            print(f"| {name} ({size:.2f} GB) | added work | {wall:.3f} | | {cpu:.3f} | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
