"""Verified reads: bytes flipped or cut in any kind of store file are an error naming that file
(exit 1 for data, 2 for a manifest that no longer parses), never a result and never a crash.

Searches that load an HNSW graph or faiss codes run in a subprocess: if a damaged file ever
reached hnswlib's loader again, the test would see the segfault (rc 139 / -11), not die with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.retrieval import build_index
from sbert_cli.store.manifest import IndexManifest, KeywordManifest
from sbert_cli.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_corpus"
HASH = "hash:32"
runner = CliRunner()
DRIVER = """
import sys
from fakes import hash_factory
from sbert_cli.encoding.loader import ENCODER_FACTORIES
from sbert_cli.cli import main
ENCODER_FACTORIES["hash"] = hash_factory
sys.argv = ["sbert", *sys.argv[1:]]
main()
"""


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


def sbert_process(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    command = [sys.executable, "-c", DRIVER, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


# -- damage ---------------------------------------------------------------------------------------
def flip_at(path: Path, offset: int, count: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "middle": lambda p: flip_at(p, p.stat().st_size // 2),
    "start": lambda p: flip_at(p, min(8, p.stat().st_size - 4)),
    "end": lambda p: flip_at(p, p.stat().st_size - 4),
    "cut": lambda p: p.write_bytes(p.read_bytes()[:-16]),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The sample corpus (500 texts, shards of 200) with an HNSW graph and a keyword index."""
    path = tmp_path_factory.mktemp("built") / "store"
    encode_corpus([str(SAMPLE)], path, EncodeOptions(model=HASH, shard_size=200))
    build_index(path)
    return path


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, built) -> Path:
    path = tmp_path_factory.mktemp("compressed") / "store"
    shutil.copytree(built, path)
    build_index(path, quantize="int8", bm25=False)
    return path


def _keyword_file(name: str):
    def pick(store: Path) -> Path:
        return store / "keyword" / KeywordManifest.load(store).folder / name

    return pick


def _index_file(part: int | None):
    def pick(store: Path) -> Path:
        manifest = IndexManifest.load(store)
        return store / "index" / (manifest.file if part is None else manifest.parts[part].name)

    return pick


KEYWORD_FILES = [
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
    "vocab.index.json",
    "params.index.json",
    "ids.npy",
]
# kind: (which store, the file, the search that reads it, exit code, in a subprocess)
FILES = {
    "shard": ("built", lambda s: s / Store.open(s).shards[1].file, ["--exact", "--mode", "dense"], 1, False),
    "manifest.json": ("built", lambda s: s / "manifest.json", ["--exact", "--mode", "dense"], 2, False),
    "index.json": ("built", lambda s: s / "index" / "index.json", ["--mode", "dense"], 2, False),
    "hnsw graph": ("built", _index_file(None), ["--mode", "dense"], 1, True),
    "keyword.json": ("built", lambda s: s / "keyword" / "keyword.json", ["--mode", "keyword"], 2, False),
    **{f"keyword {n}": ("built", _keyword_file(n), ["--mode", "keyword"], 1, False) for n in KEYWORD_FILES},
    "int8 codes": ("compressed", _index_file(None), ["--mode", "dense"], 1, True),
    "code ids": ("compressed", _index_file(0), ["--mode", "dense"], 1, False),
    "code vectors": ("compressed", _index_file(1), ["--mode", "dense"], 1, False),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", list(FILES))
def test_damage_to_any_store_file_is_an_error_naming_it(tmp_path, built, compressed, kind, damage):
    which, pick, options, code, isolated = FILES[kind]
    store = tmp_path / "store"
    shutil.copytree(built if which == "built" else compressed, store)
    victim = pick(store)
    DAMAGE[damage](victim)
    args = ["search", store, "whale hunting ship", "-k", "3", *options, "--format", "jsonl"]
    result = sbert_process(*args) if isolated else sbert(*args)
    rc = result.returncode if isolated else result.exit_code
    assert rc in (code, 1, 2), (rc, result.stderr)  # never 0 and a result, never a crash (139, -11)
    if code == 1:
        assert rc == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbert: error: "), result.stderr
    assert str(victim) in lines[0] or (kind == "manifest.json" and str(store) in lines[0]), lines[0]
    if code == 1:
        assert "--rebuild" in lines[0] or "sbert check --repair" in lines[0]


def test_deleted_shard_is_missing_for_every_command(tmp_path, built):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    shard = Store.open(store).shards[0]
    (store / shard.file).unlink()
    missing = f"sbert: error: {store / shard.file}: shard is missing; repair with: sbert check --repair {store}\n"
    for args in (
        ["search", store, "whale", "--exact", "--mode", "dense"],
        ["search", store, "Call me Ishmael.", "-k", "500", "--mode", "dense"],  # every row: the hits need it
        ["index", store],
        ["encode", SAMPLE, "-o", store, "--model", HASH],
    ):
        result = sbert(*args)
        assert (result.exit_code, result.stderr) == (1, missing), args


def test_damaged_shard_is_refused_by_index_rebuild(tmp_path, built):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    shard = Store.open(store).shards[2]
    flip_at(store / shard.file, 100)
    before = (store / "index" / "index.json").read_bytes()
    result = sbert("index", store, "--rebuild")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"sbert: error: {store / shard.file}: shard is damaged (its checksum is not the one recorded when it "
        f"was written); repair with: sbert check --repair {store}"
    )
    assert (store / "index" / "index.json").read_bytes() == before  # the previous index stays


def test_reads_verify_each_file_once(tmp_path, built, monkeypatch):
    """A second read of a shard in one process is not hashed again (the cost stays that of reading)."""
    from sbert_cli.store import integrity

    store = Store.open(built)
    integrity.forget_verified()
    calls = []
    real = integrity.verify_view
    monkeypatch.setattr(integrity, "verify_view", lambda *a: calls.append(a[0]) or real(*a))
    monkeypatch.setattr("sbert_cli.store.store.verify_view", integrity.verify_view)
    for _ in range(3):
        store.load_embeddings()
    assert sorted(calls) == sorted(store.shard_path(s) for s in store.shards)


@pytest.mark.parametrize("search", [["--exact", "--mode", "dense"], ["-k", "500", "--mode", "dense"]])
def test_older_shards_are_verified_by_sha256(tmp_path, built, search):
    """A store written before xxh3 and page CRCs were recorded: reads (whole-shard and the fetch
    of hits' rows) verify its shards by the sha256 it has."""
    import json

    store = tmp_path / "store"
    shutil.copytree(built, store)
    data = json.loads((store / "manifest.json").read_text())
    for shard in data["shards"]:
        del shard["xxh3"], shard["page_checksums"]
    (store / "manifest.json").write_text(json.dumps(data))
    assert sbert("search", store, "whale", *search, "--format", "jsonl").exit_code == 0
    victim = store / data["shards"][1]["file"]
    flip_at(victim, victim.stat().st_size // 3)
    result = sbert("search", store, "whale", *search, "--format", "jsonl")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"sbert: error: {victim}: shard is damaged (its checksum is not the one")
