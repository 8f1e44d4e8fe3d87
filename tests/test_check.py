"""`sbert check` and `--repair`: a clean store passes, each kind of damage is one line naming its
file, repair re-encodes a damaged shard to the same vectors, rebuilds damaged indexes, and names
the inputs it needs when they changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.retrieval import build_index
from sbert_cli.store.manifest import MANIFEST, IndexManifest, KeywordManifest
from sbert_cli.store.store import Store

runner = CliRunner()
HASH = "hash:32"


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


def flip(path: Path, offset: int | None = None, count: int = 4) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    lines = [f"Paragraph {i} tells of ships, whales and the sea, number {i * 7}." for i in range(90)]
    (folder / "a.txt").write_text("\n".join(lines[:60]) + "\n")
    (folder / "b.txt").write_text("\n".join(lines[60:]) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus) -> Path:
    """90 texts in two inputs, shards of 25 (5 shards: 25, 25, 10 and 25, 5), dense and keyword indexes."""
    path = tmp_path_factory.mktemp("built") / "store"
    encode_corpus([str(corpus)], path, EncodeOptions(model=HASH, shard_size=25))
    build_index(path)
    return path


def test_clean_store_passes(store):
    result = sbert("check", store)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"{store}: ok: manifest, 5 shard(s) (90 rows), HNSW index, keyword index; " in result.stderr
    data = json.loads(sbert("check", store, "--format", "json").stdout)
    assert data["ok"] and data["problems"] == [] and data["shards"] == 5 and data["rows"] == 90
    assert data["files"] == 5 + 1 + len(KeywordManifest.load(store).files)


def test_damaged_shard_is_one_line_and_exit_1(store):
    shard = Store.open(store).shards[1]
    flip(store / shard.file)
    result = sbert("check", store)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{store / shard.file}: shard is damaged (its checksum is not the one recorded when it was written); "
        f"repair with: sbert check --repair {store}"
    ]
    problems = json.loads(sbert("check", store, "--format", "json").stdout)["problems"]
    assert [p["kind"] for p in problems] == ["shard"] and problems[0]["path"] == str(store / shard.file)


def test_every_kind_of_problem_is_reported(store):
    shards = Store.open(store).shards
    (store / shards[0].file).unlink()
    (store / shards[2].file).write_bytes((store / shards[2].file).read_bytes()[:-10])
    graph = store / "index" / IndexManifest.load(store).file
    flip(graph)
    keyword = KeywordManifest.load(store)
    flip(store / "keyword" / keyword.folder / keyword.files[0].name, offset=0)
    lines = sbert("check", store).stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{store / shards[0].file}: shard is missing; repair with")
    assert lines[1].startswith(f"{store / shards[2].file}: shard is damaged ({shards[2].bytes - 10:,} bytes")
    assert lines[2].startswith(f"{graph}: index file is damaged (its checksum")
    assert lines[2].endswith(f"rebuild it with: sbert index {store} --rebuild")
    assert lines[3].startswith(f"{store / 'keyword' / keyword.folder / keyword.files[0].name}: index file is damaged")


def test_manifest_damage_and_inconsistency(store, corpus):
    path = store / MANIFEST
    data = json.loads(path.read_text())
    data["inputs"][0]["rows_done"] = 59
    path.write_text(json.dumps(data))
    result = sbert("check", store)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{path}: input {corpus / 'a.txt'}: 59 rows done, shards hold 60;")
    path.write_text("{broken")
    result = sbert("check", store)
    assert result.exit_code == 1 and result.stdout.startswith(f"{path}: unreadable manifest")
    result = sbert("check", store, "--repair")
    assert result.exit_code == 1 and "--repair rebuilds shards and indexes, not the manifest" in result.stderr


def test_stale_index_and_pending_shards(store, corpus, tmp_path):
    extra = tmp_path / "c.txt"
    extra.write_text("A late paragraph about a lighthouse.\n")
    encode_corpus([str(extra)], store, EncodeOptions(model=HASH))
    result = sbert("check", store)
    assert result.exit_code == 0  # not indexed yet is a note: search covers it exactly
    assert "note: 1 shard(s) (1 rows) are not in the dense index yet" in result.stderr


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_repair_reencodes_a_shard_to_the_same_vectors(store, damage):
    before = Store.open(store)
    shard = before.shards[2]
    ids, vectors = before.load_embeddings()
    if damage == "flip":
        flip(store / shard.file, offset=200)
    else:
        (store / shard.file).unlink()
    result = sbert("check", store, "--repair")
    assert result.exit_code == 0, result.output
    assert "re-encoded 1 shard(s) from their inputs (all byte-identical to what was written)" in result.stderr
    after = Store.open(store)
    assert after.shards == before.shards  # same bytes: same checksums, the indexes still cover it
    got_ids, got_vectors = after.load_embeddings()
    assert (got_ids == ids).all() and np.array_equal(got_vectors, vectors)
    assert sbert("check", store).exit_code == 0
    assert sbert("search", store, "whales", "--exact", "-k", "1", "--format", "jsonl").exit_code == 0


def test_repair_rebuilds_damaged_indexes(store):
    graph = store / "index" / IndexManifest.load(store).file
    flip(graph, offset=100)
    keyword = KeywordManifest.load(store)
    (store / "keyword" / keyword.folder / "ids.npy").unlink()
    result = sbert("check", store, "--repair")
    assert result.exit_code == 0, result.output
    assert "brought the dense and keyword index(es) up to date" in result.stderr
    assert sbert("search", store, "whales", "-k", "2").exit_code == 0
    assert sbert("search", store, "whales", "-k", "2", "--mode", "keyword").exit_code == 0


def test_repair_names_the_inputs_it_needs(tmp_path):
    corpus = tmp_path / "in.txt"
    corpus.write_text("\n".join(f"line {i} about the sea" for i in range(30)) + "\n")
    store = tmp_path / "store"
    encode_corpus([str(corpus)], store, EncodeOptions(model=HASH, shard_size=10))
    shard = Store.open(store).shards[1]
    flip(store / shard.file)
    size = corpus.stat().st_size
    corpus.write_text("a different file now\n")
    result = sbert("check", store, "--repair")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"sbert: error: {store}: cannot re-encode 1 shard(s): their inputs are needed as they were when encoded: "
        f"{corpus} (changed since it was encoded: {size:,} bytes then, 21 now) (or encode those inputs again with "
        "--force)"
    )
    result = sbert("encode", corpus, "-o", store, "--model", HASH, "--force")  # the other way out
    assert result.exit_code == 0, result.output
    assert sbert("check", store).exit_code == 0
    flip(store / Store.open(store).shards[0].file)
    corpus.unlink()
    assert f"{corpus} (missing)" in sbert("check", store, "--repair").stderr


def test_repair_records_xxh3_for_older_shards(store):
    path = store / MANIFEST
    data = json.loads(path.read_text())
    for shard in data["shards"]:  # as written before xxh3 and page checksums were recorded
        del shard["xxh3"], shard["page_checksums"]
    path.write_text(json.dumps(data))
    assert all(s.xxh3 is None for s in Store.open(store).shards)
    assert sbert("check", store).exit_code == 0  # verified by sha256
    result = sbert("check", store, "--repair")
    assert result.exit_code == 0 and "recorded the fast checksum (xxh3) of 5 older shard(s)" in result.stderr
    assert all(s.xxh3 for s in Store.open(store).shards)


def test_repair_reads_an_input_the_way_it_was_read(tmp_path):
    """A CSV encoded with --text-column: repair re-reads that column, so the shard comes back
    byte for byte (with the defaults it would read another column, or refuse)."""
    from sbert_cli.inputs.reader import ReadOptions

    corpus = tmp_path / "reviews.csv"
    corpus.write_text("stars,review\n" + "".join(f"{i % 5},review number {i} of a ship\n" for i in range(40)))
    store = tmp_path / "store"
    options = EncodeOptions(model=HASH, shard_size=15, read=ReadOptions(text_column="review"))
    encode_corpus([str(corpus)], store, options)
    before = Store.open(store).shards
    (store / before[1].file).unlink()
    result = sbert("check", store, "--repair")
    assert result.exit_code == 0, result.output
    assert Store.open(store).shards == before


def test_repair_of_a_chunked_store_gives_the_same_chunks_and_vectors(tmp_path):
    """Long records become several rows (chunks), which shift the ids after them: the repaired
    shard has the same rows, ids and vectors."""
    corpus = tmp_path / "long.txt"
    long = " ".join(f"word{i} about the sea" for i in range(40))  # 160 words: several chunks of 32 tokens
    corpus.write_text("\n".join([long if i % 3 == 0 else f"short line {i}" for i in range(30)]) + "\n")
    store = tmp_path / "store"
    encode_corpus([str(corpus)], store, EncodeOptions(model=HASH, shard_size=20, chunk_size=32, chunk_overlap=8))
    before = Store.open(store)
    assert before.rows > 30 and len(before.shards) >= 3
    ids, vectors = before.load_embeddings()
    for shard in before.shards[1:]:
        (store / shard.file).unlink()
    result = sbert("check", store, "--repair")
    assert result.exit_code == 0, result.output
    after = Store.open(store)
    assert after.shards == before.shards
    got_ids, got_vectors = after.load_embeddings()
    assert (got_ids == ids).all() and np.array_equal(got_vectors, vectors)
