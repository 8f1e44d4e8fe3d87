"""`sbert info STORE`: text for people, JSON for scripts, exit 0."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app

runner = CliRunner()


def sbert(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def store(tmp_path: Path, sample_texts: list[str], monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    for n, name in enumerate(["a", "b", "c"]):
        (tmp_path / "docs" / f"{name}.txt").write_text("\n".join(sample_texts[10 * n : 10 * n + 10]) + "\n\n")
    sbert("encode", "docs", "-o", "store", "--model", "hash:32", "-q")
    return tmp_path / "store"


def info(*extra: str) -> dict:
    return json.loads(sbert("info", "store", "--format", "json", *extra).stdout)


def test_info_json_of_a_fresh_store(store):
    data = info()
    assert {k: data[k] for k in ("rows", "records", "inputs", "inputs_missing", "inputs_changed", "shards")} == {
        "rows": 30,
        "records": 30,
        "inputs": 3,
        "inputs_missing": [],
        "inputs_changed": [],
        "shards": 3,
    }
    assert (data["model"], data["dim"], data["dtype"], data["storage_dtype"]) == ("hash:32", 32, "fp32", "float32")
    assert data["index"] is None and data["keyword_index"] is None and data["kept_fields"] == {}
    assert data["chunking"] == {"mode": "chunk", "size": 1024, "overlap": 32, "whole": 2048}
    assert data["bytes"] == sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert [i["source"] for i in data["input_list"]] == ["docs/a.txt", "docs/b.txt", "docs/c.txt"]


def test_info_reports_disk_changes_and_index_state(store, tmp_path):
    sbert("index", "store", "-q")
    assert info()["index"]["state"] == "up to date" and info()["keyword_index"]["state"] == "up to date"
    (tmp_path / "docs" / "a.txt").unlink()
    with open(tmp_path / "docs" / "b.txt", "a") as fh:
        fh.write("one more line\n")
    data = info()
    assert (data["inputs_missing"], data["inputs_changed"]) == (["docs/a.txt"], ["docs/b.txt"])
    sbert("encode", "docs", "-o", "store", "--sync", "-q")
    data = info()
    assert (data["rows"], data["inputs_missing"], data["inputs_changed"]) == (21, [], [])
    assert data["index"]["state"] == "stale by 11 rows and 2 removed shard(s)"
    assert data["keyword_index"]["state"] == "stale by 11 rows and 2 removed shard(s)"
    sbert("index", "store", "-q")
    index = info()["index"]
    assert (index["rows"], index["deleted"], index["state"]) == (21, 0, "up to date")  # 10 of 31 deleted: compacted


def test_info_text(store):
    lines = sbert("info", "store").stdout.splitlines()
    assert lines[:4] == [
        "store:          store",
        "rows:           30",
        "records:        30",
        "inputs:         3; missing on disk: 0; changed on disk: 0",
    ]
    assert "index:          none (build one with: sbert index STORE)" in lines
    assert any(line.startswith("readers:        shards hold live rows only") for line in lines)


def test_info_on_no_store_exits_2(tmp_path):
    result = runner.invoke(app, ["info", os.fspath(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such store" in result.stderr


def test_info_names_a_damaged_index_manifest_as_its_state(store):
    sbert("index", "store", "-q")
    (store / "index" / "index.json").write_text("{not json")
    data = info()
    assert data["index"]["state"].startswith("damaged: ") and "index.json" in data["index"]["state"]
    assert data["keyword_index"]["state"] == "up to date"
