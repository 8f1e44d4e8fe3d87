"""Nothing unverified is committed: a write that a library cut short (a full disk) is an error
naming the file, and the previous shard, graph, codes or keyword index stays in use.

hnswlib ignores a short write, so the graph is checked against the size its own structure
implies; the other writers raise, and each error names the path. The last test fills a real
tmpfs where the machine lets the test mount one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import hnswlib
import numpy as np
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.errors import SbertError
from sbert_cli.retrieval import Index, build_index
from sbert_cli.retrieval.graph import graph_file_size
from sbert_cli.store.manifest import IndexManifest, KeywordManifest
from sbert_cli.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
HASH = "hash:32"
runner = CliRunner()


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def store(tmp_path) -> Path:
    """The sample corpus, indexed, plus one input encoded since: the next `sbert index` writes."""
    path = tmp_path / "store"
    encode_corpus([str(ROOT / "sample_corpus")], path, EncodeOptions(model=HASH, shard_size=200))
    build_index(path)
    extra = tmp_path / "extra.txt"
    extra.write_text("A line that arrives after the index was built.\n")
    encode_corpus([str(extra)], path, EncodeOptions(model=HASH))
    return path


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def assert_previous_index_in_use(store: Path, before: bytes) -> None:
    assert (store / "index" / "index.json").read_bytes() == before
    assert not [p for p in (store / "index").iterdir() if p.name.startswith(".")]  # no temp file left
    hit = Index.open(store).search(["A line that arrives after the index was built."], k=1, mode="dense")[0][0]
    assert hit.text == "A line that arrives after the index was built."  # old graph + exact over the new shard


def test_graph_file_size_walks_hnswlib_files(tmp_path):
    graph = hnswlib.Index(space="ip", dim=8)
    graph.init_index(max_elements=400, M=4, ef_construction=20)
    graph.add_items(np.random.default_rng(0).random((300, 8), dtype=np.float32))
    path = tmp_path / "g.bin"
    graph.save_index(str(path))
    assert graph_file_size(path, 300, 8) == path.stat().st_size
    whole = path.read_bytes()
    for cut in (len(whole) - 3, len(whole) // 2, 40):
        path.write_bytes(whole[:cut])
        try:
            walked = graph_file_size(path, 300, 8)
        except ValueError:
            continue  # the walk ran off the end
        assert walked != cut  # or it found the file shorter than its structure
    path.write_bytes(whole)
    with pytest.raises(ValueError, match="header says 300 elements"):
        graph_file_size(path, 301, 8)


def test_short_graph_write_is_not_committed(store, monkeypatch):
    class ShortWrite(hnswlib.Index):  # what hnswlib does on a full disk: no error, a short file
        def save_index(self, path: str) -> None:
            super().save_index(path)
            os.truncate(path, os.path.getsize(path) - 1000)

    monkeypatch.setattr(hnswlib, "Index", ShortWrite)
    before = (store / "index" / "index.json").read_bytes()
    new = store / "index" / f"hnsw-{IndexManifest.load(store).generation + 1:06d}.bin"
    with pytest.raises(SbertError) as caught:
        build_index(store, bm25=False)
    assert str(caught.value).startswith(f"{new}: the graph read back is incomplete (ends after")
    assert str(caught.value).endswith("nothing was committed, the previous index stays in use")
    monkeypatch.undo()
    assert_previous_index_in_use(store, before)
    assert build_index(store, bm25=False).added == 1


def test_full_disk_while_writing_codes_names_the_file(store, monkeypatch):
    real = Path.write_bytes

    def full_for_codes(self: Path, data: bytes) -> int:
        if ".int8-" in self.name:
            real(self, data[: len(data) // 2])
            no_space()
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_codes)
    before = (store / "index" / "index.json").read_bytes()
    result = sbert("index", store, "--quantize", "int8", "--no-bm25")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"sbert: error: {store / 'index' / 'int8-000002.faiss'}: could not be written (No space left on device); "
        "nothing was committed, the previous version stays in use"
    )
    monkeypatch.undo()
    assert_previous_index_in_use(store, before)


def test_full_disk_while_writing_the_keyword_index(store, monkeypatch):
    import bm25s

    monkeypatch.setattr(bm25s.BM25, "save", no_space)
    before = KeywordManifest.path_in(store).read_bytes()
    result = sbert("index", store)
    assert result.exit_code == 1
    folder = store / "keyword" / f"bm25-{KeywordManifest.load(store).generation + 1:06d}"
    assert result.stderr.strip().splitlines()[-1] == (
        f"sbert: error: {folder}: the keyword index could not be written (No space left on device); nothing "
        "was committed, the previous keyword index stays in use"
    )
    assert KeywordManifest.path_in(store).read_bytes() == before
    assert [p.name for p in (store / "keyword").iterdir()] == sorted(
        ["keyword.json", KeywordManifest.load(store).folder]
    )


def test_short_shard_write_is_not_committed(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    real = pq.write_table

    def short(table, where, **kwargs):
        real(table, where, **kwargs)
        os.truncate(where, os.path.getsize(where) // 2)

    store = tmp_path / "store"
    encode_corpus([str(ROOT / "sample_corpus" / "moby_dick.txt")], store, EncodeOptions(model=HASH, shard_size=100))
    before = json.loads((store / "manifest.json").read_text())
    monkeypatch.setattr(pq, "write_table", short)
    extra = tmp_path / "extra.txt"
    extra.write_text("one more line\n")
    result = sbert("encode", extra, "-o", store, "--model", HASH)
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"sbert: error: {store / 'shards' / 'part-00001-00000.parquet'}: wrote 1 rows, read back none (")
    )
    assert json.loads((store / "manifest.json").read_text())["shards"] == before["shards"]
    assert not (store / "shards" / "part-00001-00000.parquet").exists()


@pytest.fixture()
def tmpfs(tmp_path):
    """A 4 MiB tmpfs, where the machine allows mounting one (root, CAP_SYS_ADMIN); else skip."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_real_full_disk_keeps_the_previous_index(tmpfs, tmp_path):
    store = tmpfs / "store"
    encode_corpus([str(ROOT / "sample_corpus")], store, EncodeOptions(model=HASH, shard_size=200))
    build_index(store)
    extra = tmp_path / "extra.txt"
    extra.write_text("A line that arrives after the index was built.\n")
    encode_corpus([str(extra)], store, EncodeOptions(model=HASH))
    before = (store / "index" / "index.json").read_bytes()
    filler = tmpfs / "filler"
    stat = os.statvfs(tmpfs)
    with open(filler, "wb") as fh:  # leave 16 KiB: less than the new graph needs
        os.posix_fallocate(fh.fileno(), 0, stat.f_bavail * stat.f_frsize - 16 * 1024)
    result = sbert("index", store)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sbert: error: {store / 'index'}/hnsw-000002.bin: "), last
    assert "nothing was committed" in last
    assert_previous_index_in_use(store, before)
    filler.unlink()
    assert sbert("index", store).exit_code == 0
    assert Store.open(store).rows == 501 and sbert("check", store).exit_code == 0
