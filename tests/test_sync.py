"""`sbert encode --sync`: a store that follows its folder, night after night (hash model, CliRunner,
real files in tmp_path, exact outputs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import hash_embed
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.store.store import Store

runner = CliRunner()
HASH = ["--model", "hash:32"]


def paragraphs(sample_texts: list[str], start: int, n: int) -> list[str]:
    return sample_texts[start : start + n]


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path, sample_texts: list[str]) -> Path:
    """Three text files of 10 paragraphs each."""
    docs = tmp_path / "docs"
    for n, name in enumerate(["a.txt", "b.txt", "c.txt"]):
        write(docs / name, paragraphs(sample_texts, 10 * n, 10))
    return docs


def sync(folder: Path, store: Path, *extra: str):
    result = runner.invoke(app, ["encode", str(folder), "-o", str(store), "--sync", *HASH, *extra])
    assert result.exit_code == 0, result.output
    return result


def summary_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if " new, ~" in line)


def rows(store: Path) -> pd.DataFrame:
    """What any Parquet reader sees in STORE/shards, in a stable order."""
    df = pd.read_parquet(store / "shards")
    return df.sort_values(["source", "line"]).reset_index(drop=True)


@pytest.fixture
def no_model(monkeypatch):
    """Call it to fail the test if a later run loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    return lambda: monkeypatch.setattr("sbert_cli.encoding.loader.load_encoder", refuse)


def test_first_night_then_a_night_without_change_loads_no_model(folder, tmp_path, monkeypatch):
    store = tmp_path / "store"
    first = sync(folder, store)
    assert summary_line(first) == (
        f"sbert: +3 new, ~0 changed (0 records re-encoded), -0 removed, >0 renamed, 0 unchanged; "
        f"store {store} now has 30 rows"
    )
    monkeypatch.setattr("sbert_cli.encoding.loader.load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    second = sync(folder, store)
    assert second.stderr == (
        f"sbert: +0 new, ~0 changed (0 records re-encoded), -0 removed, >0 renamed, 3 unchanged; "
        f"store {store} now has 30 rows\n"
    )
    verbose = sync(folder, store, "-v")
    assert "sbert: docs/a.txt: unchanged, 10 rows" in verbose.stderr.replace(str(folder.parent) + "/", "")


def test_edit_encodes_only_changed_records_and_keeps_ids_and_vectors(folder, tmp_path, sample_texts):
    store = tmp_path / "store"
    sync(folder, store)
    before = rows(store)
    lines = paragraphs(sample_texts, 0, 10)
    edited = [lines[0], "An entirely new first thought.", *lines[2:], "And one more at the end."]
    write(folder / "a.txt", edited)  # line 2 replaced, line 11 added
    result = sync(folder, store)
    assert summary_line(result) == (
        f"sbert: +0 new, ~1 changed (2 records re-encoded), -0 removed, >0 renamed, 2 unchanged; "
        f"store {store} now has 31 rows"
    )
    assert "encoded 2 texts from 1 input(s)" in result.stderr
    after = rows(store)
    a_before, a_after = before[before.source.str.endswith("a.txt")], after[after.source.str.endswith("a.txt")]
    assert a_after.text.tolist() == edited and a_after.line.tolist() == list(range(1, 12))
    kept = a_before[a_before.line != 2].set_index("text")
    for _, row in a_after[a_after.text.isin(kept.index)].iterrows():  # same id, same bits
        assert row.id == kept.loc[row.text, "id"]
        np.testing.assert_array_equal(row.embedding, kept.loc[row.text, "embedding"])
    new_ids = a_after[~a_after.text.isin(kept.index)].id
    assert (new_ids > before.id[before.source.str.endswith("a.txt")].max()).all()  # ids never reused
    assert not set(new_ids) & set(before.id)
    np.testing.assert_allclose(np.stack(a_after[a_after.line == 2].embedding), [hash_embed(edited[1], 32)], atol=1e-6)
    assert rows(store).drop(columns=["id"]).equals(rows(store).drop(columns=["id"]))


def test_reordered_lines_are_kept_with_their_new_line_numbers(folder, tmp_path, sample_texts, no_model):
    store = tmp_path / "store"
    shutil.copytree(folder, tmp_path / "copy")
    runner.invoke(app, ["encode", str(tmp_path / "copy"), "-o", str(store), *HASH])  # a store made without --sync
    no_model()
    shutil.rmtree(tmp_path / "copy")
    shutil.copytree(folder, tmp_path / "copy")
    lines = paragraphs(sample_texts, 10, 10)
    write(tmp_path / "copy" / "b.txt", lines[::-1])
    result = sync(tmp_path / "copy", store)
    assert "~1 changed (0 records re-encoded)" in summary_line(result)
    b = rows(store)[lambda d: d.source.str.endswith("b.txt")]
    assert b.text.tolist() == lines[::-1] and b.line.tolist() == list(range(1, 11))


def test_deleted_input_rows_are_removed(folder, tmp_path, no_model):
    store = tmp_path / "store"
    runner.invoke(app, ["encode", str(folder), "-o", str(store), *HASH])
    no_model()
    (folder / "b.txt").unlink()
    result = sync(folder, store)
    assert summary_line(result) == (
        f"sbert: +0 new, ~0 changed (0 records re-encoded), -1 removed, >0 renamed, 2 unchanged; "
        f"store {store} now has 20 rows"
    )
    df = rows(store)
    assert len(df) == 20 and not df.source.str.endswith("b.txt").any()
    assert sorted(p.name for p in (store / "shards").iterdir()) == [
        "part-00000-00000.parquet",
        "part-00002-00000.parquet",
    ]
    assert [e.source for e in Store.open(store).manifest.inputs] == [str(folder / "a.txt"), str(folder / "c.txt")]


def test_renamed_and_moved_inputs_are_renamed_without_encoding(folder, tmp_path, no_model):
    store = tmp_path / "store"
    sync(folder, store)
    before = rows(store)
    (folder / "sub").mkdir()
    os.rename(folder / "a.txt", folder / "sub" / "a2.txt")
    no_model()
    result = runner.invoke(app, ["encode", str(folder), "-o", str(store), "--sync"])  # the store's model
    assert result.exit_code == 0, result.output
    assert summary_line(result) == (
        f"sbert: +0 new, ~0 changed (0 records re-encoded), -0 removed, >1 renamed, 2 unchanged; "
        f"store {store} now has 30 rows"
    )
    after = rows(store)
    moved = after[after.source == str(folder / "sub" / "a2.txt")]
    original = before[before.source == str(folder / "a.txt")]
    assert moved.id.tolist() == original.id.tolist() and moved.text.tolist() == original.text.tolist()
    np.testing.assert_array_equal(np.stack(moved.embedding), np.stack(original.embedding))
    assert not (after.source == str(folder / "a.txt")).any()


def test_touch_costs_a_rehash_only(folder, tmp_path, no_model):
    store = tmp_path / "store"
    runner.invoke(app, ["encode", str(folder), "-o", str(store), *HASH])
    no_model()
    files = sorted((store / "shards").iterdir())
    os.utime(folder / "a.txt", ns=(1, 1))
    result = sync(folder, store)
    assert "+0 new, ~0 changed (0 records re-encoded), -0 removed, >0 renamed, 3 unchanged" in result.stderr
    assert sorted((store / "shards").iterdir()) == files
    (entry,) = [e for e in Store.open(store).manifest.inputs if e.source.endswith("a.txt")]
    assert entry.mtime_ns == 1
    assert "3 unchanged" in summary_line(sync(folder, store))


def test_a_file_replaced_by_a_different_one_under_the_same_name(folder, tmp_path, sample_texts):
    store = tmp_path / "store"
    sync(folder, store)
    replacement = paragraphs(sample_texts, 100, 7)
    write(folder / "c.txt", replacement)
    result = sync(folder, store)
    assert "~1 changed (7 records re-encoded)" in summary_line(result)
    c = rows(store)[lambda d: d.source.str.endswith("c.txt")]
    assert c.text.tolist() == replacement
    np.testing.assert_allclose(np.stack(c.embedding), [hash_embed(t, 32) for t in replacement], atol=1e-6)


def test_an_input_that_becomes_empty_keeps_no_rows(folder, tmp_path, no_model):
    store = tmp_path / "store"
    runner.invoke(app, ["encode", str(folder), "-o", str(store), *HASH])
    no_model()
    (folder / "a.txt").write_text("\n\n", encoding="utf-8")
    result = sync(folder, store)
    assert summary_line(result) == (
        f"sbert: +0 new, ~1 changed (0 records re-encoded), -0 removed, >0 renamed, 2 unchanged; "
        f"store {store} now has 20 rows"
    )
    assert not rows(store).source.str.endswith("a.txt").any()
    assert "3 unchanged" in summary_line(sync(folder, store))


def test_a_night_of_every_change_equals_a_fresh_encode(folder, tmp_path, sample_texts):
    """Whatever happened, the store holds what encoding the folder afresh gives (ids aside)."""
    store = tmp_path / "store"
    sync(folder, store)
    # 5 lines kept, 1 new, and 2 repeated: a second copy of a stored text is a new record
    write(folder / "a.txt", [*paragraphs(sample_texts, 0, 5), "A changed line.", *paragraphs(sample_texts, 0, 2)])
    (folder / "b.txt").unlink()
    os.rename(folder / "c.txt", folder / "c-renamed.txt")
    write(folder / "d.txt", paragraphs(sample_texts, 200, 4))
    result = sync(folder, store)
    assert summary_line(result) == (
        f"sbert: +1 new, ~1 changed (3 records re-encoded), -1 removed, >1 renamed, 0 unchanged; "
        f"store {store} now has 22 rows"
    )
    fresh = tmp_path / "fresh"
    runner.invoke(app, ["encode", str(folder), "-o", str(fresh), *HASH])
    a, b = rows(store), rows(fresh)
    assert a[["source", "line", "text"]].equals(b[["source", "line", "text"]])
    np.testing.assert_allclose(np.stack(a.embedding), np.stack(b.embedding), atol=1e-6)
    assert a.id.is_unique


def test_sync_refuses_stdin_and_force(folder, tmp_path):
    store = tmp_path / "store"
    sync(folder, store)
    result = runner.invoke(app, ["encode", "-", "-o", str(store), "--sync", *HASH], input="x\n")
    assert result.exit_code == 2
    assert result.stderr == "sbert: error: -: --sync follows files and folders; standard input has no name to follow\n"
    result = runner.invoke(app, ["encode", str(folder), "-o", str(store), "--sync", "--force", *HASH])
    assert (result.exit_code, result.stderr) == (2, "sbert: error: --sync does not combine with --force\n")


def test_force_after_an_edit_gives_the_input_new_ids(folder, tmp_path, sample_texts):
    """After --sync gave an edited input's new records ids above its lines, --force (line ids)
    must not give an old id to another text: the input starts over under a new index."""
    store = tmp_path / "store"
    sync(folder, store)
    assert runner.invoke(app, ["index", str(store), "-q"]).exit_code == 0
    write(folder / "a.txt", ["A new first line.", *paragraphs(sample_texts, 0, 10)])
    sync(folder, store)
    before = rows(store)
    result = runner.invoke(app, ["encode", str(folder / "a.txt"), "-o", str(store), "--force", "-q"])
    assert result.exit_code == 0, result.output
    after = rows(store)
    a = after[after.source.str.endswith("a.txt")]
    assert not set(a.id) & set(before.id) and len(a) == 11 and after.id.is_unique
    assert runner.invoke(app, ["index", str(store), "-q"]).exit_code == 0
    result = runner.invoke(
        app, ["search", str(store), "A new first line.", "-k", "3", "--mode", "dense", "--format", "jsonl"]
    )
    assert '"text": "A new first line."' in result.stdout.splitlines()[0]


def test_an_append_or_an_edit_in_place_writes_only_the_shards_it_touches(tmp_path, sample_texts):
    """Shards whose rows stay as they were are linked under a new name, not written again; the
    store still equals a fresh encode, checks clean, and the index follows."""
    folder, store, fresh = tmp_path / "docs", tmp_path / "store", tmp_path / "fresh"
    lines = paragraphs(sample_texts, 0, 40)
    write(folder / "log.txt", lines)
    sync(folder, store, "--shard-size", "10")
    assert runner.invoke(app, ["index", str(store), "-q"]).exit_code == 0
    before = [s.sha256 for s in Store.open(store).shards]

    nights = [
        ([*lines, "An appended line."], [True, True, True, True, False]),  # the last shard is new
        ([*lines[:14], "An edited line.", *lines[15:], "An appended line."], [True, False, True, True, True]),
        (["An inserted first line.", *lines], [False] * 5),  # every line moves: every shard is new
    ]
    for text, kept in nights:
        write(folder / "log.txt", text)
        sync(folder, store)
        shards = Store.open(store).shards
        assert [s.sha256 in before for s in shards] == kept
        assert not any((store / name).exists() for name in set(os.listdir(store / "shards")) - {s.file for s in shards})
        shutil.rmtree(fresh, ignore_errors=True)
        runner.invoke(app, ["encode", str(folder), "-o", str(fresh), *HASH, "--shard-size", "10"])
        a, b = rows(store), rows(fresh)
        assert a[["line", "text"]].equals(b[["line", "text"]]) and a.id.is_unique
        np.testing.assert_allclose(np.stack(a.embedding), np.stack(b.embedding), atol=1e-6)
        assert runner.invoke(app, ["check", str(store)]).exit_code == 0
        assert runner.invoke(app, ["index", str(store), "-q"]).exit_code == 0
        found = runner.invoke(app, ["search", str(store), text[14], "-k", "1", "--format", "jsonl"])
        assert found.exit_code == 0 and json.loads(found.stdout)["line"] == 15
        before = [s.sha256 for s in shards]


@pytest.mark.slow
def test_a_night_without_change_on_a_real_model_store_imports_no_torch(tmp_path):
    """The store's model is taken as recorded: nothing is resolved, torch is not imported."""
    import subprocess
    import sys

    write(tmp_path / "docs" / "a.txt", ["A first line.", "A second line."])
    store = tmp_path / "store"
    assert runner.invoke(app, ["encode", str(tmp_path / "docs"), "-o", str(store), "--sync", "-q"]).exit_code == 0
    night = (
        "import sys\nfrom sbert_cli.cli import main\n"
        f"sys.argv = ['sbert', 'encode', {str(tmp_path / 'docs')!r}, '-o', {str(store)!r}, '--sync', '-q']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", night], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
