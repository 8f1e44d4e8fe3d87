"""Benchmark `sbert serve`: start-up, search under concurrent load, embeddings throughput beside
`sbert encode`'s model loop on the same texts, and how large the batches across requests get.

    # the targets of issue 23 (a few minutes each once the stores are built, which is once):
    python benchmarks/bench_serve.py --rows 100000                   # search, start-up and embeddings, real model
    python benchmarks/bench_serve.py --model hash:384 --rows 100000  # the same without a model's cost

Every figure is printed with the load average it was measured at (the machine may be shared),
the share of the CPUs' time the hypervisor stole meanwhile (`steal %`: on a virtual machine, other
guests' load, which this machine's load average does not show), and the server's CPU seconds,
which depend less on either than wall-clock time.
Start-up is measured twice, the second time after the first run's one-time caches (the OS page
cache, the calibration and ONNX caches): the second is the target's figure.

Rows are sentences of the books in ../shared/data (sample_corpus/ without it; cycled, numbered,
past their count). The store
is built once per (model, rows) in --work. The server is a subprocess (`sbert serve --port 0`);
clients are coroutines on one aiohttp ClientSession in this process (which shares the machine's cores
with the server, as a local client would). Each phase runs sequentially (1 client) and then with
--clients concurrent clients; batch sizes are read from the server's /metrics.
`hash:DIM` is the tests' stand-in encoder (tests/fakes.py): no model cost, so what remains is HTTP,
batching, the index and fetching rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
# ../shared/data beside the checkout (or beside its worktree's parent)
DATA = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.is_dir()), None)

LAUNCHER = """
import sys
sys.path.insert(0, {tests!r})
import fakes
from sbert_cli.encoding.loader import ENCODER_FACTORIES
ENCODER_FACTORIES["hash"] = fakes.hash_factory
import os
if os.environ.get("SBERT_BENCH_QUERY_VECTORS"):  # --precomputed-queries: look query vectors up
    import numpy as np
    from sbert_cli.retrieval.search import Index
    saved = np.load(os.environ["SBERT_BENCH_QUERY_VECTORS"])
    table = dict(zip(saved["texts"].tolist(), saved["vectors"]))
    Index.encode = lambda self, queries: np.stack([table[q] for q in queries])
from sbert_cli.cli import main
sys.argv = ["sbert", "serve", *sys.argv[1:]]
main()
"""
FIRST_QUERY = "a first question"
ARGS = argparse.Namespace()
SERVER_PID = 0  # the server process, whose CPU time each phase reads


def register_hash() -> None:
    import fakes

    from sbert_cli.encoding.loader import ENCODER_FACTORIES

    ENCODER_FACTORIES["hash"] = fakes.hash_factory


def sentences(limit: int) -> list[str]:
    # Without ../shared/data: the repository's sample_corpus (the same books' first paragraphs).
    books = DATA / "books" if DATA is not None else ROOT / "sample_corpus"
    found = []
    for path in sorted(books.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            found += [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if len(s.split()) >= 4]
    rows = found[:limit]
    n = 0
    while len(rows) < limit:  # past the books' sentences: the same sentences, numbered
        rows.append(f"{found[n % len(found)]} ({n // len(found) + 2})")
        n += 1
    return rows


def build_store(
    work: Path, model: str, rows: int, backend: str = "auto", dtype: str = "auto"
) -> tuple[Path, list[str]]:
    """The benchmark's store, built once per model, rows, engine asked for and sbert version."""
    from sbert_cli import __version__
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.retrieval import build_index

    texts = sentences(rows + 4000)
    engine = "" if model.startswith("hash") else f"-{backend}-{dtype}"
    store = work / f"{model.replace(':', '-')}-{rows}{engine}-sbert{__version__}"
    corpus = work / f"rows-{rows}.txt"
    if not corpus.exists():
        corpus.write_text("".join(t + "\n" for t in texts[:rows]), encoding="utf-8")
    if not (store / "index" / "index.json").exists():
        started = time.perf_counter()
        options = EncodeOptions(model=None if model == "default" else model, backend=backend, dtype=dtype)
        encode_corpus([str(corpus)], store, options)
        build_index(store)
        print(f"built {store} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if model == "default":  # the fast query encoder's graph, as `sbert index` prepares it
            from sbert_cli.cli._common import prepare_fast_queries

            prepare_fast_queries(str(store))
    return store, texts[rows:]  # texts not in the store: queries and inputs


def precompute_queries(store: Path, queries: list[str]) -> Path:
    """--precomputed-queries: the store's query vectors for the benchmark's queries, made once by
    the query encoder `sbert search` uses, saved for the server to look up (LAUNCHER)."""
    import numpy as np

    from sbert_cli.retrieval.search import Index

    path = ARGS.work / f"query-vectors-{store.name}.npz"
    texts = [FIRST_QUERY, *queries]
    if not path.exists():
        np.savez(path, texts=np.array(texts), vectors=Index.open(store).encode(texts))
    return path


def start_server(store: Path, extra: list[str]) -> tuple[subprocess.Popen, str, float]:
    """The server process, its URL, and seconds from launch to the first answered search."""
    command = [sys.executable, "-c", LAUNCHER.format(tests=str(ROOT / "tests")), str(store), "--port", "0", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ARGS.query_vectors is not None:
        env["SBERT_BENCH_QUERY_VECTORS"] = str(ARGS.query_vectors)
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    url = ""
    for line in process.stderr:
        match = re.search(r"serving .* on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    if not url:
        raise SystemExit(f"the server did not start: {process.wait()}")
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # keep the pipe empty
    answer = httpx.get(f"{url}/search", params={"q": FIRST_QUERY, "k": 10}, timeout=60)
    answer.raise_for_status()
    return process, url, time.perf_counter() - started


def batch_stats(url: str) -> dict[str, tuple[float, float]]:
    """(requests summed, batches counted) per kind, from /metrics."""
    stats: dict[str, list[float]] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        match = re.match(r'sbert_batch_requests_(sum|count)\{kind="(\w+)"\} (\S+)', line)
        if match:
            stats.setdefault(match.group(2), [0.0, 0.0])[match.group(1) == "count"] = float(match.group(3))
    return {k: (v[0], v[1]) for k, v in stats.items()}


async def load(url: str, make_request, total: int, clients: int) -> tuple[float, list[float], int]:
    """`total` requests from `clients` concurrent clients: (seconds, latencies, errors).

    The clients are aiohttp's: they share the server's two cores, and httpx's AsyncClient took
    2.5 ms of CPU a request against aiohttp's 0.2 (a load generator should cost little)."""
    latencies: list[float] = []
    errors = 0
    next_request = iter(range(total))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:

        async def worker() -> None:
            nonlocal errors
            for n in next_request:
                method, path, kwargs = make_request(n)
                started = time.perf_counter()
                async with client.request(method, path, **kwargs) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                errors += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started, latencies, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to other guests while this machine's CPUs wanted it (/proc/stat
    `steal`, all CPUs): a phase with much of it ran on a slower machine than its neighbours."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def phase(url: str, kind: str, make_request, total: int, clients: int, per_request: int) -> dict:
    before = batch_stats(url).get(kind, (0.0, 0.0))
    cpu_before, client_before, stolen_before = cpu_seconds(SERVER_PID), time.process_time(), stolen_seconds()
    seconds, latencies, errors = asyncio.run(load(url, make_request, total, clients))
    cpu = cpu_seconds(SERVER_PID) - cpu_before
    client_cpu = time.process_time() - client_before
    after = batch_stats(url).get(kind, (0.0, 0.0))
    latencies.sort()
    stolen = stolen_seconds() - stolen_before
    return {
        "load": os.getloadavg()[0],
        "steal %": 100 * stolen / (seconds * (os.cpu_count() or 1)),
        "clients": clients,
        "requests": total,
        "errors": errors,
        "req/s": total / seconds,
        "texts/s": total * per_request / seconds,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "requests/batch": (after[0] - before[0]) / max(1.0, after[1] - before[1]),
        "server CPU ms/req": 1000 * cpu / total,
        "client CPU ms/req": 1000 * client_cpu / total,
        "texts/server CPU s": total * per_request / max(cpu, 1e-9),
    }


def encode_peer(model: str, texts: list[str]) -> float:
    """`sbert encode`'s model loop on the same texts, in this process (model loaded): texts/s."""
    from sbert_cli.encoding.loader import load_encoder, recorded_engine, settings_for_record
    from sbert_cli.store.store import Store

    record = Store.open(ARGS.store).model  # the engine the store records, as the server's; no prompt
    encoder = load_encoder(replace(recorded_engine(settings_for_record(record), record), prompt=""))
    encoder.encode(texts[:64])  # warm
    started, cpu = time.perf_counter(), time.process_time()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started), len(texts) / (time.process_time() - cpu)


def machine() -> str:
    """The CPU's name, cores and the flags that decide engines (bf16, AMX, AVX-512)."""
    name, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown CPU":
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(shown) or 'no AVX2'}"


def table(title: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    print(f"\n{title}\n\n| " + " | ".join(columns) + " |\n|" + " ---: |" * len(columns))
    for row in rows:
        cells = [f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in row.values()]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="default (all-MiniLM-L6-v2) or hash:DIM")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--searches", type=int, default=320)
    parser.add_argument("--embed-requests", type=int, default=128, help="requests of --texts texts each")
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="encode/serve alternations; the best of each")
    parser.add_argument("--backend", default="auto", help="the store's engine, as `sbert encode --backend`")
    parser.add_argument("--dtype", default="auto", help="the store's dtype, as `sbert encode --dtype`")
    parser.add_argument(
        "--precomputed-queries",
        action="store_true",
        help="the server looks each query's vector up (made beforehand by the store's query encoder) "
        "instead of encoding it: what serving costs on a real store without the model's cost",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sbert-bench-serve"))
    global ARGS
    ARGS = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    register_hash()
    ARGS.work.mkdir(parents=True, exist_ok=True)
    ARGS.store, spare = build_store(ARGS.work, ARGS.model, ARGS.rows, ARGS.backend, ARGS.dtype)
    queries, inputs = spare[:2000], spare[2000:]
    ARGS.query_vectors = precompute_queries(ARGS.store, queries) if ARGS.precomputed_queries else None
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    process, url, first = start_server(ARGS.store, [])
    process.terminate()
    process.wait(timeout=60)
    load = os.getloadavg()[0]
    process, url, startup = start_server(ARGS.store, [])
    print(
        f"launch to the first answered search: {first:.2f} s the first time, {startup:.2f} s the second (load {load:.1f})"
    )
    global SERVER_PID
    SERVER_PID = process.pid
    try:
        run(url, startup, queries, inputs)
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def run(url: str, startup: float, queries: list[str], inputs: list[str]) -> None:
    # The server loads the embeddings model in the background after its first answer: wait for
    # it, so that one-time work (seconds of CPU) is not counted against the first phase's requests.
    deadline = time.perf_counter() + 300
    while httpx.get(f"{url}/health").json()["engine"]["embeddings"] is None and time.perf_counter() < deadline:
        time.sleep(0.2)
    health = httpx.get(f"{url}/health").json()
    looked_up = "; query vectors looked up, not encoded (--precomputed-queries)" if ARGS.query_vectors else ""
    print(f"\nstore: {health['rows']:,} rows, model {ARGS.model}; kept rows: {health['kept_rows']}{looked_up}")

    def search_request(n: int):
        return "GET", "/search", {"params": {"q": queries[n % len(queries)], "k": 10}}

    def embed_request(n: int):
        start = (n * ARGS.texts) % (len(inputs) - ARGS.texts)
        return "POST", "/v1/embeddings", {"json": {"input": inputs[start : start + ARGS.texts]}}

    searches = [phase(url, "search", search_request, ARGS.searches // 4, 1, 1)]
    searches.append(phase(url, "search", search_request, ARGS.searches, ARGS.clients, 1))
    table(f"Searches (k=10, default mode), {os.getloadavg()[0]:.1f} load", searches)
    if not ARGS.model.startswith("hash") and ARGS.query_vectors is None:
        query_encoder_floor(queries[: ARGS.searches])

    texts = [t for n in range(ARGS.embed_requests) for t in embed_request(n)[2]["json"]["input"]]
    served, peer = [], []
    for _ in range(ARGS.rounds):  # interleaved: the machine's load moves between them alike
        peer.append(encode_peer(ARGS.model, texts))
        served.append(phase(url, "embeddings", embed_request, ARGS.embed_requests, ARGS.clients, ARGS.texts))
    alone = phase(url, "embeddings", embed_request, ARGS.embed_requests // 4, 1, ARGS.texts)
    best = max(served, key=lambda r: r["texts/s"])
    table(f"Embeddings ({ARGS.texts} texts a request), {os.getloadavg()[0]:.1f} load", [alone, best])
    wall, cpu = max(p[0] for p in peer), max(p[1] for p in peer)
    print(f"\nengine: {httpx.get(f'{url}/health').json()['engine']}")
    peer_policy = os.environ.get("OMP_WAIT_POLICY", "unset: libgomp's default, threads spin 300,000 rounds")
    print(f"OpenMP: server GOMP_SPINCOUNT=10000 (sbert serve sets it), `sbert encode`'s loop here {peer_policy}")
    print(
        f"\n`sbert encode`'s model loop on the same {len(texts):,} texts (best of {ARGS.rounds}): {wall:,.1f} "
        f"texts/s wall, {cpu:,.1f} texts/CPU s; served with {ARGS.clients} clients: "
        f"{best['texts/s']:,.1f} texts/s wall = {best['texts/s'] / wall:.2f}x, "
        f"{best['texts/server CPU s']:,.1f} texts/CPU s = {best['texts/server CPU s'] / cpu:.2f}x"
    )


def query_encoder_floor(queries: list[str]) -> None:
    """What the model alone allows: the store's query encoder (the one the server runs) timed in
    this process on the searches' own queries, in groups of --clients (the batches a loaded server
    forms), the server idle meanwhile. With C clients that never pause and N cores the model alone
    keeps each request C x (CPU s a query) / N on average, before any HTTP, index or fusion."""
    from sbert_cli.retrieval.search import Index

    index = Index.open(ARGS.store)
    index.encode(queries[: ARGS.clients])  # loaded and warmed outside the timing
    cpu = time.process_time()
    for start in range(0, len(queries), ARGS.clients):
        index.encode(queries[start : start + ARGS.clients])
    per_query_ms = 1000 * (time.process_time() - cpu) / len(queries)
    cores = os.cpu_count() or 1
    print(
        f"\nthe query encoder alone ({type(index.encoder()).__name__}, groups of {ARGS.clients}, load "
        f"{os.getloadavg()[0]:.1f}): {per_query_ms:.1f} CPU ms a query; {ARGS.clients} clients on {cores} "
        f"cores cannot average under {ARGS.clients * per_query_ms / cores:.0f} ms a request on the model alone"
    )


if __name__ == "__main__":
    main()
