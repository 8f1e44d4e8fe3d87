"""The store's own files: a damaged or foreign manifest.json / index.json is one line and exit 2
(InputError from the library), a store written by the previous release (format version 1) still
opens and searches, and committing a file never leaves a temp file behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.retrieval import Index, build_index
from sbert_cli.store.atomic import atomic_path, is_temp_name, write_atomic
from sbert_cli.store.manifest import IndexManifest, StoreManifest
from sbert_cli.store.store import Store

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Written by the previous release (commit a4bdbed, store format 1) from V1_CORPUS copied to
# /tmp/v1gen/corpus.txt: `sbert encode /tmp/v1gen/corpus.txt -o store_v1 --device cpu --dtype fp32
# --shard-size 3 && sbert index store_v1` (5 rows in 2 shards, an HNSW index; .lock left out).
V1_STORE = FIXTURES / "store_v1"
V1_CORPUS = FIXTURES / "store_v1_corpus.txt"
REAL = ["--device", "cpu", "--dtype", "fp32"]

runner = CliRunner()


def sbert(*args: str | Path, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture()
def store(tmp_path: Path, sample_store: Path) -> Path:
    """A private, indexed copy of the hash-model sample store."""
    path = tmp_path / "store"
    shutil.copytree(sample_store, path)
    build_index(path)
    return path


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_item(keys: tuple, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


def del_item(keys: tuple) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return change


# (how the file is damaged, what is wrong with it as the message says)
MANIFEST_DAMAGE = {
    "truncated": (lambda p: p.write_text(p.read_text()[:200]), "unreadable manifest (Unterminated string"),
    "empty": (lambda p: p.write_text(""), "unreadable manifest (Expecting value: line 1 column 1 (char 0))"),
    "foreign": (
        lambda p: p.write_text('{"name": "my-app", "version": "1.0.0"}'),
        "not an sbert store manifest (format is not 'sbert-store')",
    ),
    "a list": (lambda p: p.write_text("[1, 2]"), "not an sbert store manifest (format is not 'sbert-store')"),
    "no version": (lambda p: edit_json(p, del_item(("version",))), "damaged sbert store manifest (no version)"),
    "version 0": (
        lambda p: edit_json(p, set_item(("version",), 0)),
        "damaged sbert store manifest (unknown version 0)",
    ),
    "newer": (
        lambda p: edit_json(p, set_item(("version",), 4)),
        "format version 4 is newer than this sbert reads (3); upgrade sbert",
    ),
    "missing field": (
        lambda p: edit_json(p, del_item(("model", "dim"))),
        "damaged sbert store manifest (model.dim: missing)",
    ),
    "wrong type": (
        lambda p: edit_json(p, set_item(("shards", 0, "rows"), "200")),
        "damaged sbert store manifest (shards[0].rows: expected int, found str)",
    ),
    "not a list": (
        lambda p: edit_json(p, set_item(("inputs",), {})),
        "damaged sbert store manifest (inputs: expected a list)",
    ),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_damaged_manifest_is_one_line_naming_the_file(store, damage):
    spoil, what = MANIFEST_DAMAGE[damage]
    path = store / "manifest.json"
    spoil(path)
    result = sbert("search", store, "whale", "--exact", "--format", "jsonl")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    line = f"sbert: error: {path}: {what}"
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith(")\n") or result.stderr == line + "\n"
    with pytest.raises(InputError) as raised:  # the library says the same
        Store.open(store)
    assert f"sbert: error: {raised.value}\n" == result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["search", "{store}", "whale"],
        ["index", "{store}"],
        ["encode", "{corpus}", "-o", "{store}", "--model", HASH_MODEL],
        ["cluster", "{store}", "--k", "2"],
        ["similarity", "a", "b", "--store", "{store}"],
    ],
)
def test_every_command_refuses_a_damaged_manifest_and_changes_nothing(store, tmp_path, command):
    corpus = tmp_path / "new.txt"
    corpus.write_text("a new line\n")
    path = store / "manifest.json"
    edit_json(path, del_item(("model", "fingerprint")))
    before = path.read_bytes()
    result = sbert(*(a.format(store=store, corpus=corpus) for a in command))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"sbert: error: {path}: damaged sbert store manifest (model.fingerprint: missing)\n"
    assert result.stdout == ""
    assert path.read_bytes() == before  # nobody "repaired" it by writing over it


INDEX_DAMAGE = {
    "truncated": (lambda p: p.write_text(p.read_text()[:100]), "unreadable index manifest ("),
    "foreign": (
        lambda p: p.write_text('{"format": "faiss", "version": 1}'),
        "not an sbert index (format is not 'sbert-hnsw-index')",
    ),
    "missing field": (lambda p: edit_json(p, del_item(("count",))), "damaged sbert index (count: missing)"),
    "wrong type": (
        lambda p: edit_json(p, set_item(("shards", 0, "sha256"), 7)),
        "damaged sbert index (shards[0].sha256: expected str, found int)",
    ),
    "version 0": (lambda p: edit_json(p, set_item(("version",), 0)), "damaged sbert index (unknown version 0)"),
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_damaged_index_manifest_is_one_line_and_index_rebuilds_it(store, damage):
    spoil, what = INDEX_DAMAGE[damage]
    path = store / "index" / "index.json"
    spoil(path)
    result = sbert("search", store, "whale", "--format", "jsonl")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"sbert: error: {path}: {what}"), line
    assert line.endswith(f"; rebuild with: sbert index {store} --rebuild")
    with pytest.raises(InputError, match="rebuild with"):
        IndexManifest.load(store)
    with pytest.raises(InputError, match="rebuild with"):
        Index.open(store)

    exact = sbert("search", store, "whale", "--exact", "-k", "2", "--format", "jsonl")  # needs no index
    assert exact.exit_code == 0 and len(exact.stdout.splitlines()) == 2, exact.output
    rebuilt = sbert("index", store)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.stderr.startswith(f"sbert: rebuilding the index: {path}: {what}")
    assert "built the index: added 500 rows" in rebuilt.stderr
    assert sbert("search", store, "whale", "-k", "2", "--format", "jsonl").exit_code == 0


# -- stores of the previous release ---------------------------------------------------------------
def test_format_1_store_of_the_previous_release_opens_and_searches(tmp_path, encoder):
    store = tmp_path / "v1"
    shutil.copytree(V1_STORE, store)
    written = (store / "manifest.json").read_text()
    on_disk = json.loads(written)
    assert on_disk["version"] == 1 and "sbert_version" not in on_disk  # what sbert 0.1 wrote

    opened = Store.open(store)
    assert (opened.manifest.version, opened.manifest.sbert_version, opened.rows, opened.dim) == (3, None, 5, 384)
    assert opened.model.fingerprint == encoder.describe().fingerprint  # the model is still recognized
    texts = [t for t in V1_CORPUS.read_text().splitlines() if t]
    ids, vectors = opened.load_embeddings()
    assert ids.tolist() == [1, 2, 3, 5, 6]
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=1e-5)

    graph = sbert("search", store, "a whale near a ship", "-k", "2", "--format", "jsonl", "--device", "cpu")
    exact = sbert("search", store, "a whale near a ship", "-k", "2", "--format", "jsonl", "--exact")
    assert graph.exit_code == exact.exit_code == 0, graph.output + exact.output
    assert graph.stderr == exact.stderr == ""
    for result in (graph, exact):
        hits = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(h["rank"], h["id"], h["line"], h["text"]) for h in hits] == [
            (1, 1, 1, "The whale surfaced beside the ship at dawn."),
            (2, 5, 5, "The harpooneer sharpened his iron on the deck."),
        ]
        assert hits[0]["source"] == "/tmp/v1gen/corpus.txt"
    assert (store / "manifest.json").read_text() == written  # reading and searching write nothing


def test_format_1_store_takes_new_rows_and_is_saved_as_format_2(tmp_path, encoder):
    store = tmp_path / "v1"
    shutil.copytree(V1_STORE, store)
    old_index = (store / "index" / "index.json").read_text()
    more = tmp_path / "more.txt"
    more.write_text("A storm broke over the sea.\n")
    result = sbert("encode", more, "-o", store, "-q", *REAL)
    assert result.exit_code == 0, result.output
    saved = json.loads((store / "manifest.json").read_text())
    assert (saved["version"], saved["sbert_version"]) == (3, "0.1.0")
    assert [s["rows"] for s in saved["shards"]] == [3, 2, 1]
    updated = sbert("index", store)  # the old index is extended, not rebuilt: same model, same shards
    assert updated.exit_code == 0, updated.output
    assert "updated the index: added 1 rows from 1 shard(s)" in updated.stderr and "rebuilding" not in updated.stderr
    assert (store / "index" / "index.json").read_text() != old_index
    hits = sbert("search", store, "a storm at sea", "-k", "1", "--format", "jsonl", *REAL[:2])
    assert hits.exit_code == 0 and json.loads(hits.stdout)["text"] == "A storm broke over the sea."


def test_format_1_manifest_written_from_a_current_one_opens(tmp_path, sample_store):
    """The migration alone, on the hash model: the same JSON without sbert_version, version 1."""
    store = tmp_path / "store"
    shutil.copytree(sample_store, store)
    edit_json(store / "manifest.json", lambda d: d.update(version=1) or d.pop("sbert_version"))
    current = StoreManifest.load(sample_store)
    migrated = StoreManifest.load(store)
    assert migrated.version == 3 and migrated.sbert_version is None
    assert (migrated.model, migrated.inputs, migrated.shards) == (current.model, current.inputs, current.shards)
    result = sbert("search", store, "whale", "--exact", "-k", "3", "--format", "jsonl")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3, result.output


# -- committing files ------------------------------------------------------------------------------
def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and is_temp_name(tmp.name) and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not replaced before the block ends
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["data.bin"]
    write_atomic(tmp_path / "other.json", b"{}")
    assert listing(tmp_path) == ["data.bin", "other.json"]


@pytest.mark.parametrize("wrote", [True, False])
def test_atomic_path_leaves_no_temp_when_the_writer_raises(tmp_path, wrote):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            if wrote:
                tmp.write_bytes(b"half of the new cont")
            raise RuntimeError("disk on fire")
    assert listing(tmp_path) == ["data.bin"]
    assert target.read_bytes() == b"old"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C too
        with atomic_path(tmp_path / "fresh.bin") as tmp:
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert listing(tmp_path) == ["data.bin"]
