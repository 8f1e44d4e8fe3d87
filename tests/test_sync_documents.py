"""`--sync` meets chunking, kept fields, `--where` and `sbert check`: a long record is several
rows sharing one `record_hash`; an edit inside it re-encodes that record's chunks only; removed
rows never come back; a synced or trimmed store checks clean and repairs (hash model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from fakes import HASH_MODEL
from test_documents import PARAGRAPH, make_format_2
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.inputs.hashing import content_hash
from sbert_cli.store.store import Store

runner = CliRunner()
HASH = ["--model", HASH_MODEL]
CHUNKING = ["--chunk-size", "10", "--chunk-overlap", "2", "--shard-size", "5", "--keep-fields", "year"]
WORDS = ["amber", "birch", "cobalt", "dune", "ember", "fjord"]


def sbert(*args: str | Path):
    return runner.invoke(app, [*map(str, args)])


def docs(folder: Path, texts: list[str], years: list[int], name: str = "docs.jsonl") -> Path:
    """A JSON-lines file of long records (each several chunks) with a `year` field."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lines = [json.dumps({"text": t, "year": y}) for t, y in zip(texts, years, strict=True)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def long_texts() -> list[str]:
    return [f"{word.capitalize()} opens it. {PARAGRAPH} {PARAGRAPH}" for word in WORDS[:4]]


def sync(folder: Path, store: Path, *extra: str):
    result = sbert("encode", folder, "-o", store, "--sync", *HASH, *CHUNKING, *extra)
    assert result.exit_code == 0, result.output
    return result


def rows(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store / "shards").sort_values(["source", "line", "chunk"]).reset_index(drop=True)


def summary_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if " new, ~" in line)


def hit_ids(store: Path, *args: str) -> set[int]:
    result = sbert("search", store, "lighthouse keeper", "-k", "100", "--format", "jsonl", *args)
    assert result.exit_code == 0, result.output
    return {json.loads(line)["id"] for line in result.stdout.splitlines()}


def test_an_edit_inside_a_long_record_reencodes_only_that_records_chunks(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    texts = long_texts()
    docs(folder, texts, [2001, 2002, 2003, 2004])
    sync(folder, store)
    before = rows(store)
    assert before.columns.tolist()[-2:] == ["embedding", "record_hash"]
    assert before.groupby("line").size().min() > 2  # every record is several chunk rows
    for (line, group), text, year in zip(before.groupby("line"), texts, [2001, 2002, 2003, 2004], strict=True):
        assert set(group.record_hash) == {content_hash(text, None, {"year": year})}, line

    texts[2] = texts[2].replace("froze on the glass", "thawed on the glass", 1)  # inside record 3
    docs(folder, texts, [2001, 2002, 2003, 2004])
    result = sync(folder, store)
    assert "~1 changed (1 records re-encoded)" in summary_line(result)
    after = rows(store)
    for line in (1, 2, 4):
        old, new = before[before.line == line], after[after.line == line]
        assert new.id.tolist() == old.id.tolist() and new.record_hash.tolist() == old.record_hash.tolist()
        assert np.array_equal(np.stack(new.embedding), np.stack(old.embedding))
    edited = after[after.line == 3]
    assert not set(edited.id) & set(before.id) and after.id.is_unique
    assert set(edited.record_hash) == {content_hash(texts[2], None, {"year": 2003})}
    assert [texts[2][s:e] for s, e in zip(edited.start, edited.end, strict=True)] == edited.text.tolist()

    # The store now holds what a fresh encode of the file gives (but for the ids).
    fresh = tmp_path / "fresh"
    assert sbert("encode", folder, "-o", fresh, *HASH, *CHUNKING, "-q").exit_code == 0
    columns = ["text", "line", "chunk", "start", "end", "year", "record_hash"]
    assert after[columns].equals(rows(fresh)[columns])
    assert np.array_equal(np.stack(after.embedding), np.stack(rows(fresh).embedding))

    docs(folder, texts, [2001, 2002, 2003, 2024])  # a kept field is part of the record too
    result = sync(folder, store)
    assert "~1 changed (1 records re-encoded)" in summary_line(result)
    assert rows(store)[lambda d: d.line == 4].year.unique().tolist() == [2024]


def test_removed_rows_never_come_back_in_any_mode(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    texts = long_texts()
    docs(folder, texts, [2001, 2002, 2003, 2004])
    sync(folder, store)
    assert sbert("index", store, "-q").exit_code == 0
    before = rows(store)
    texts[1] = texts[1].replace("lighthouse keeper", "harbour master")
    docs(folder, texts[:3], [2001, 2002, 2003])  # record 2 edited, record 4 gone
    sync(folder, store)
    removed = set(before.id) - set(rows(store).id)
    assert removed and len(removed) == len(before[before.line.isin([2, 4])])
    modes = [["--exact"], ["--mode", "dense"], ["--mode", "keyword"], ["--mode", "hybrid"], ["--chunks"]]
    for stage in ("index behind", "index updated"):
        for mode in modes:
            found = hit_ids(store, *mode)  # (keyword: rewritten rows are found once `sbert index` runs)
            assert not found & removed and (found or (stage, mode[-1]) == ("index behind", "keyword")), (stage, mode)
            assert not hit_ids(store, *mode, "--where", "year >= 2002") & removed, (stage, mode)
        assert sbert("index", store, "-q").exit_code == 0


def test_rm_then_check_is_clean_and_where_sees_live_rows_only(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    docs(folder, long_texts()[:2], [1999, 2010], "old.jsonl")
    docs(folder, long_texts()[2:], [2011, 2012], "new.jsonl")
    sync(folder, store)
    assert sbert("index", store, "-q").exit_code == 0
    assert sbert("rm", store, folder / "new.jsonl").exit_code == 0
    check = sbert("check", store)
    assert check.exit_code == 0, check.output
    result = sbert("search", store, "lighthouse", "--where", "year > 2000", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(h["source"]).name, h["line"], h["year"]) for h in hits] == [("old.jsonl", 2, 2010)]
    nothing = sbert("search", store, "lighthouse", "--where", "year > 2010", "--format", "jsonl")
    assert (nothing.exit_code, nothing.stdout) == (0, "")


def test_a_synced_store_checks_clean_and_repairs_a_lost_shard(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    texts = long_texts()
    docs(folder, texts, [2001, 2002, 2003, 2004])
    sync(folder, store)
    texts.insert(0, texts.pop(3).replace("spray", "salt spray"))  # moved and edited: ids overlap now
    docs(folder, texts, [2004, 2001, 2002, 2003])
    sync(folder, store)
    assert sbert("index", store, "-q").exit_code == 0
    check = sbert("check", store)
    assert check.exit_code == 0, check.output
    before = rows(store)
    lost = Store.open(store).shards[-1]
    assert lost.rewritten
    (store / lost.file).unlink()
    damaged = sbert("check", store)
    assert damaged.exit_code == 1 and f"{store / lost.file}: shard is missing" in damaged.stdout
    repaired = sbert("check", store, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert sbert("check", store).exit_code == 0
    after = rows(store)
    same = ["text", "source", "line", "chunk", "start", "end", "year", "record_hash"]
    assert after[same].equals(before[same]) and after.id.is_unique
    assert np.array_equal(np.stack(after.embedding), np.stack(before.embedding))
    assert hit_ids(store)  # the index was brought up to date with the repaired shard's ids
    assert set(hit_ids(store, "--chunks", "-k", "100")) <= set(after.id)


def test_sync_on_a_store_written_before_record_hash_hashes_the_stored_text(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    lines = [f"Line {n}: {PARAGRAPH}" for n in range(5)]
    (folder).mkdir()
    (folder / "a.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    assert sbert("encode", folder, "-o", store, *HASH, "-q").exit_code == 0
    make_format_2(store)
    lines[2] = "An edited line."
    (folder / "a.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    result = sbert("encode", folder, "-o", store, "--sync", *HASH)
    assert result.exit_code == 0, result.output
    assert "~1 changed (1 records re-encoded)" in summary_line(result)
    df = rows_plain(store)
    assert df.columns.tolist() == ["id", "text", "source", "line", "embedding"]  # the store's layout stays
    assert df.text.tolist() == lines
    assert sbert("check", store).exit_code == 0


def rows_plain(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store / "shards").sort_values(["line"]).reset_index(drop=True)
