"""`sbert rm STORE INPUT...`: inputs removed by path or by the name the store shows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.store.store import LINE_BITS, Store

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, sample_texts: list[str], monkeypatch) -> Path:
    """Inputs named relatively (docs/a.txt ...), as a user in the folder would name them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    for n, name in enumerate(["a", "b", "c"]):
        (tmp_path / "docs" / f"{name}.txt").write_text("\n".join(sample_texts[10 * n : 10 * n + 10]) + "\n")
    result = runner.invoke(app, ["encode", "docs", "-o", "store", "--model", "hash:32", "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "store"


def test_rm_by_source_name_and_by_path(store, tmp_path):
    result = runner.invoke(app, ["rm", "store", "docs/a.txt", str(tmp_path / "docs" / "c.txt")])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "sbert: removed 2 input(s) (docs/a.txt, docs/c.txt), 20 rows; store store now has 10 rows "
        "(run `sbert index store` to update its index)\n"
    )
    df = pd.read_parquet(store / "shards")
    assert sorted(set(df.source)) == ["docs/b.txt"] and len(df) == 10
    assert [p.name for p in (store / "shards").iterdir()] == ["part-00001-00000.parquet"]


def test_unknown_input_exits_2_and_changes_nothing(store):
    before = (store / "manifest.json").read_bytes()
    result = runner.invoke(app, ["rm", "store", "docs/b.txt", "docs/nope.txt"])
    assert result.exit_code == 2
    assert result.stderr == (
        "sbert: error: docs/nope.txt: not an input of this store; its inputs: docs/a.txt, docs/b.txt, docs/c.txt\n"
    )
    assert (store / "manifest.json").read_bytes() == before


def test_no_such_store_exits_2(tmp_path):
    result = runner.invoke(app, ["rm", str(tmp_path / "none"), "a.txt"])
    assert result.exit_code == 2
    assert "no such store" in result.stderr


def test_an_input_added_again_gets_new_ids(store):
    old = set(pd.read_parquet(store / "shards").query("source == 'docs/c.txt'").id)
    assert runner.invoke(app, ["rm", "store", "docs/c.txt"]).exit_code == 0
    assert runner.invoke(app, ["encode", "docs/c.txt", "-o", "store", "-q"]).exit_code == 0
    again = set(pd.read_parquet(store / "shards").query("source == 'docs/c.txt'").id)
    assert len(again) == 10 and not old & again
    assert {i >> LINE_BITS for i in again} == {3}  # index 2 is never reused
    assert Store.open(store).manifest.next_input == 4
