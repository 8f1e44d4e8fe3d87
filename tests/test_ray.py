"""`--ray`: encoding and index partitions on a local Ray runtime (2 CPUs), compared with local runs.

Every test but the missing-extra one starts Ray and is marked slow. Ray workers are fresh
processes: they find the hash model (and the stand-ins below) because sbert ships the driver's
registered model schemes to them, and import `fakes`/`test_ray` through PYTHONPATH, which the
local runtime passes on to them.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import HASH_MODEL, HashEncoder, hash_factory
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.store.atomic import sha256_file
from sbert_cli.store.store import Store

TESTS = Path(__file__).resolve().parent
RAY_EXTRA = "pip install 'sbert-cli[ray]'"


# -- stand-in models the workers load ------------------------------------------------------------
class SlowHash(HashEncoder):
    """The hash model, slowed down so that a run lasts long enough to be killed in the middle."""

    def run(self, window):
        time.sleep(0.5)
        return super().run(window)


def slow_factory(settings):
    base = hash_factory(settings)
    return SlowHash(base.word_dim, base.pooling, base.normalize, base.max_tokens)


class DiesOnce(HashEncoder):
    """The hash model, whose process is killed (SIGKILL) at its third window, once per `marker`."""

    def __init__(self, marker: str, *args) -> None:
        super().__init__(*args)
        self.marker = Path(marker)

    def run(self, window):
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(window)


def dies_once_factory(settings, marker: str):
    base = hash_factory(settings)
    return DiesOnce(marker, base.word_dim, base.pooling, base.normalize, base.max_tokens)


# -- helpers ------------------------------------------------------------------------------------
def read_store(path: Path) -> pd.DataFrame:
    store = Store.open(path)
    for shard in store.shards:  # every listed shard is whole: its checksum matches
        assert sha256_file(path / shard.file) == shard.sha256
    return pd.concat([pd.read_parquet(path / s.file) for s in store.shards], ignore_index=True)


def assert_same_store(ray_store: Path, local_store: Path) -> None:
    """Same ids, texts, lines and shards, vectors to cos >= 0.99999, same resume points, no strays."""
    a, b = read_store(ray_store), read_store(local_store)
    assert a["id"].tolist() == b["id"].tolist() and a["id"].is_unique
    assert a["text"].tolist() == b["text"].tolist()
    assert a["line"].tolist() == b["line"].tolist() and a["source"].tolist() == b["source"].tolist()
    va, vb = np.stack(a["embedding"]), np.stack(b["embedding"])
    cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    assert cos.min() >= 0.99999
    ma, mb = Store.open(ray_store).manifest, Store.open(local_store).manifest
    assert [(s.file, s.rows, s.id_min, s.id_max) for s in ma.shards] == [
        (s.file, s.rows, s.id_min, s.id_max) for s in mb.shards
    ]
    keys = ("index", "rows_done", "last_line", "shards", "complete", "blank")
    assert [[getattr(e, k) for k in keys] for e in ma.inputs] == [[getattr(e, k) for k in keys] for e in mb.inputs]
    assert sorted(p.name for p in (ray_store / "shards").iterdir()) == sorted(
        p.name for p in (local_store / "shards").iterdir()
    )


@pytest.fixture
def ray_env(monkeypatch):
    """Workers import `fakes` and this module: the local runtime passes PYTHONPATH on to them."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def corpora(tmp_path, sample_texts) -> list[str]:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("\n".join(sample_texts[:230]) + "\n", encoding="utf-8")
    two.write_text("\n\n".join(sample_texts[230:330]) + "\n", encoding="utf-8")  # blank lines between
    return [str(one), str(two)]


# -- the missing extra: fast, no Ray started ------------------------------------------------------
def test_ray_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch, corpora):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    runner = CliRunner()
    encode = runner.invoke(app, ["encode", *corpora, "-o", str(tmp_path / "s"), "-m", HASH_MODEL, "--ray"])
    assert encode.exit_code == 2
    assert RAY_EXTRA in encode.output and "--ray needs Ray" in encode.output
    assert not (tmp_path / "s").exists()
    index = runner.invoke(app, ["index", str(tmp_path / "s"), "--partitions", "2", "--ray", "auto"])
    assert index.exit_code == 2 and RAY_EXTRA in index.output


# -- encode ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_store_equals_local_store(tmp_path, corpora, ray_env):
    from sbert_cli.distributed import RayOptions, encode_on_ray

    local = tmp_path / "local"
    encode_corpus(corpora, local, EncodeOptions(model=HASH_MODEL, shard_size=40))
    environ = dict(os.environ)
    on_ray = tmp_path / "ray"
    started = time.perf_counter()
    summary = encode_on_ray(corpora, on_ray, EncodeOptions(model=HASH_MODEL, shard_size=40), RayOptions(workers=2))
    print(f"ray encode: {time.perf_counter() - started:.1f} s")
    assert (summary.rows, summary.shards, summary.inputs_encoded) == (330, 9, 2)
    assert {"read", "tokenize", "model", "write", "commit"} <= set(summary.stages)
    assert_same_store(on_ray, local)

    import ray

    assert not ray.is_initialized()  # the runtime sbert started is gone
    assert dict(os.environ) == environ  # and what ray.init set in the environment is undone

    again = encode_on_ray(corpora, on_ray, EncodeOptions(model=HASH_MODEL, shard_size=40))
    assert again.rows == 0 and again.inputs_skipped == corpora  # complete inputs: Ray is never started


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_nothing_is_written_twice(tmp_path, corpora, ray_env, monkeypatch):
    from sbert_cli.distributed import RayOptions, encode_on_ray
    from sbert_cli.encoding.loader import ENCODER_FACTORIES

    local = tmp_path / "local"
    encode_corpus(corpora, local, EncodeOptions(model=HASH_MODEL, shard_size=30))
    marker = tmp_path / "killed"
    monkeypatch.setitem(ENCODER_FACTORIES, "hash", functools.partial(dies_once_factory, marker=str(marker)))
    on_ray = tmp_path / "ray"
    encode_on_ray(corpora, on_ray, EncodeOptions(model=HASH_MODEL, shard_size=30), RayOptions(workers=2))
    assert marker.exists()  # a worker did die in the middle of the run
    assert_same_store(on_ray, local)


@pytest.fixture
def documents(tmp_path, sample_texts) -> list[str]:
    """JSON lines: records of 1 to 9 sentences (chunked at 12 words), a title and a year kept."""
    path = tmp_path / "docs.jsonl"
    rows = [
        {"title": f"doc {i}", "year": 1990 + i % 30, "text": " ".join(sample_texts[i : i + 1 + i % 9])}
        for i in range(0, 240, 3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [str(path)]


@pytest.mark.slow
def test_ray_chunks_and_keeps_fields_as_a_local_run_does(tmp_path, documents, ray_env):
    from sbert_cli.distributed import RayOptions, encode_on_ray
    from sbert_cli.inputs.reader import ReadOptions

    def options() -> EncodeOptions:
        read = ReadOptions(keep_fields=["title", "year"])
        return EncodeOptions(model=HASH_MODEL, shard_size=25, chunk_size=12, chunk_overlap=3, read=read)

    local, on_ray = tmp_path / "local", tmp_path / "ray"
    expected = encode_corpus(documents, local, options())
    summary = encode_on_ray(documents, on_ray, options(), RayOptions(workers=2))
    assert (summary.records, summary.rows) == (80, expected.rows) and expected.rows > 120  # many chunked
    assert summary.chunking == expected.chunking
    assert_same_store(on_ray, local)
    a, b = read_store(on_ray), read_store(local)
    columns = ["chunk", "start", "end", "title", "year", "record_hash"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    assert str(a["year"].dtype) == "int64"
    manifest = Store.open(on_ray).manifest
    assert manifest.chunking == Store.open(local).manifest.chunking
    assert [e.records_done for e in manifest.inputs] == [80]
    last_chunk = a.groupby("line")["chunk"].max()
    for shard in read_store_shards(on_ray):  # a shard ends where a record ends, as a local run's
        assert shard["chunk"].iloc[-1] == last_chunk[shard["line"].iloc[-1]]


def read_store_shards(path: Path) -> list[pd.DataFrame]:
    return [pd.read_parquet(path / s.file) for s in Store.open(path).shards]


DRIVER = """
import sys
from test_ray import slow_factory
from sbert_cli.encoding.loader import ENCODER_FACTORIES
from sbert_cli.cli import main
ENCODER_FACTORIES["hash"] = slow_factory
sys.argv = ["sbert", *sys.argv[1:]]
main()
"""


def committed_shards(store: Path) -> int:
    try:
        return len(json.loads((store / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.slow
def test_killed_driver_resumes_to_the_same_store(tmp_path, corpora, ray_env):
    store = tmp_path / "ray"
    command = [sys.executable, "-c", DRIVER, "encode", *corpora, "-o", str(store), "-m", HASH_MODEL]
    command += ["--shard-size", "20", "--ray", "--ray-workers", "2"]
    # Its own session: after the kill, what is left of the Ray runtime it started can be ended by group.
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 180
        while committed_shards(store) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = committed_shards(store)
    assert 3 <= done < 17
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after line" in resumed.stderr and "encoding on a local Ray runtime" in resumed.stderr

    local = tmp_path / "local"
    encode_corpus(corpora, local, EncodeOptions(model=HASH_MODEL, shard_size=20))
    assert_same_store(store, local)


# -- index partitions ---------------------------------------------------------------------------
def write_corpus(path: Path, rows: int, seed: int) -> None:
    """Distinct random sentences: no duplicate vectors, so recall by id is well defined."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(4000)]
    path.write_text("".join(" ".join(rng.choice(words, 8)) + "\n" for _ in range(rows)), encoding="utf-8")


def recall_at_10(store: Path) -> tuple[float, object]:
    from sbert_cli.retrieval import Index, exact_search

    index = Index.open(store)
    queries = np.random.default_rng(7).standard_normal((200, index.store.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found, _ = index.search_vectors(queries, 10)
    exact, _ = exact_search(index.store, queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])), index.graph


def index_files(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "index").iterdir())


@pytest.mark.slow
def test_partitioned_search_matches_exact_and_extends(tmp_path, ray_env):
    from sbert_cli.retrieval.partitions import PartitionedGraph

    runner = CliRunner()
    first, more, store = tmp_path / "first.txt", tmp_path / "more.txt", tmp_path / "store"
    write_corpus(first, 2400, seed=1)
    write_corpus(more, 500, seed=2)
    encode_corpus([str(first)], store, EncodeOptions(model="hash:32", shard_size=200))

    built = runner.invoke(app, ["index", str(store), "--partitions", "3", "--no-bm25"])
    assert built.exit_code == 0, built.output
    assert "3 partitions" in built.output
    assert index_files(store) == [*(f"hnsw-000001-p{p:03d}.bin" for p in range(3)), "index.json"]
    recall, graph = recall_at_10(store)
    assert isinstance(graph, PartitionedGraph) and len(graph.graphs) == 3 and recall >= 0.99

    encode_corpus([str(more)], store, EncodeOptions(model="hash:32", shard_size=200))
    extended = runner.invoke(app, ["index", str(store), "--no-bm25"])  # keeps its 3 partitions
    assert extended.exit_code == 0, extended.output
    assert "added 500 rows from 3 shard(s)" in extended.output and "3 partitions" in extended.output
    manifest = json.loads((store / "index" / "index.json").read_text())
    assert [p["count"] for p in manifest["partitions"]] == [1000, 1000, 900]  # new shards went to the smallest
    assert sum(len(p["shards"]) for p in manifest["partitions"]) == len(Store.open(store).shards)
    assert recall_at_10(store)[0] >= 0.99

    on_ray = runner.invoke(app, ["index", str(store), "--partitions", "2", "--ray", "--no-bm25"])
    assert on_ray.exit_code == 0, on_ray.output
    assert "rebuilding the index: partitions change from 3 to 2" in on_ray.output
    assert index_files(store) == ["hnsw-000003-p000.bin", "hnsw-000003-p001.bin", "index.json"]
    assert recall_at_10(store)[0] >= 0.99

    single = runner.invoke(app, ["index", str(store), "--partitions", "1", "--no-bm25"])
    assert single.exit_code == 0 and "now one graph" in single.output
    recall, graph = recall_at_10(store)
    assert not isinstance(graph, PartitionedGraph) and recall >= 0.99


@pytest.mark.slow
def test_the_driver_tokenizes_as_the_encoder_without_loading_weights():
    """The real model: the driver's token counter (tokenizer only) gives the encoder's ids and spans."""
    from sbert_cli.distributed.tokens import driver_token_counter
    from sbert_cli.encoding.loader import ModelSettings, cached_encoder

    texts = ["A short one.", "  Spaces around.  ", " ".join(["A much longer sentence, about whales."] * 60)]
    counter, name = driver_token_counter(ModelSettings(device="cpu", dtype="fp32"))
    expected = cached_encoder(None, device="cpu", dtype="fp32").token_counter().tokenize(texts)
    got = counter.tokenize(texts)
    assert name == "all-MiniLM-L6-v2"
    assert [t.ids for t in got] == [t.ids for t in expected] and got[2].count > 256
    assert all(np.array_equal(a.spans, b.spans) for a, b in zip(got, expected, strict=True))
