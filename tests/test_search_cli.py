"""`sbert index` and `sbert search` from the shell: real stores in tmp_path (hash model; the
subprocess test uses the real one), outputs and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.retrieval.graph import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, index_dir
from sbert_cli.store.manifest import INDEX_MANIFEST

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def sbert(*args: str | Path, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def read_index_manifest(store: Path) -> dict:
    return json.loads((index_dir(store) / INDEX_MANIFEST).read_text())


@pytest.fixture()
def store(tmp_path, sample_store) -> Path:
    path = tmp_path / "store"
    shutil.copytree(sample_store, path)
    return path


@pytest.fixture()
def indexed(store) -> Path:
    result = sbert("index", store, "--no-bm25")
    assert result.exit_code == 0, result.output
    return store


def jsonl(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_index_then_search_returns_the_stored_text_first(store, sample_texts):
    result = sbert("index", store, "--no-bm25")
    assert result.exit_code == 0, result.output
    assert "built the index: added 500 rows" in result.stderr
    assert f"M={DEFAULT_M}, ef_construction={DEFAULT_EF_CONSTRUCTION}" in result.stderr
    assert result.stdout == ""
    again = sbert("index", store, "--no-bm25")
    assert again.exit_code == 0 and "index is up to date: 500 rows" in again.stderr

    texts = [sample_texts[7], sample_texts[260], sample_texts[480]]
    result = sbert("search", store, *texts, "-k", "3", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert len(hits) == 9
    for n, text in enumerate(texts):
        mine = hits[3 * n : 3 * n + 3]
        assert [h["rank"] for h in mine] == [1, 2, 3]
        assert {h["query"] for h in mine} == {text}
        assert mine[0]["text"] == text and mine[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert mine[0]["score"] >= mine[1]["score"] >= mine[2]["score"]
        assert set(mine[0]) >= {"query", "rank", "id", "score", "text", "source", "line"}
        assert mine[0]["source"].endswith(".txt") and isinstance(mine[0]["line"], int)


def test_hnsw_and_exact_agree_from_the_shell(indexed):
    queries = ["a whale hunt at sea", "a student commits a murder", "officers at a ball in Moscow"]
    hnsw = sbert("search", indexed, *queries, "--format", "jsonl")
    exact = sbert("search", indexed, *queries, "--format", "jsonl", "--exact")
    assert hnsw.exit_code == exact.exit_code == 0, hnsw.output + exact.output
    assert [(h["query"], h["id"]) for h in jsonl(hnsw)] == [(h["query"], h["id"]) for h in jsonl(exact)]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "tsv", "csv", "table"])
def test_every_output_format_parses(indexed, fmt):
    result = sbert("search", indexed, "whaling ship", "a ball", "-k", "4", "--format", fmt)
    assert result.exit_code == 0, result.output
    out = result.stdout
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.splitlines()]
    elif fmt == "json":
        rows = json.loads(out)
    elif fmt == "tsv":
        rows = list(csv.DictReader(io.StringIO(out), delimiter="\t", quoting=csv.QUOTE_NONE))
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    else:
        assert "whaling ship" in out and "a ball" in out and "rank" in out and "score" in out
        return
    assert len(rows) == 8
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4] * 2
    columns = ["query", "rank", "id", "score", "cosine", "text", "source", "line", "key", "chunk", "start", "end"]
    assert list(rows[0]) == columns
    assert all(0 < float(r["score"]) <= 1.0 for r in rows)
    assert all(float(r["score"]) == pytest.approx(float(r["cosine"]), abs=1e-4) for r in rows)


def test_queries_from_file_and_stdin(indexed, tmp_path):
    qfile = tmp_path / "queries.txt"
    qfile.write_text("whaling ship\n\na ball in Moscow\n")
    result = sbert("search", indexed, "--queries-file", qfile, "-k", "2", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [h["query"] for h in jsonl(result)] == ["whaling ship"] * 2 + ["a ball in Moscow"] * 2

    result = sbert("search", indexed, "-", "-k", "1", "--format", "jsonl", input="a debt to a pawnbroker\n")
    assert result.exit_code == 0, result.output
    assert [h["query"] for h in jsonl(result)] == ["a debt to a pawnbroker"]


def test_min_score_filters(indexed):
    result = sbert("search", indexed, "whaling ship", "-k", "50", "--min-score", "0.4", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert 0 < len(hits) < 50 and all(h["score"] >= 0.4 for h in hits)
    result = sbert("search", indexed, "whaling ship", "--min-score", "1.01", "--format", "jsonl")
    assert result.exit_code == 0 and result.stdout == ""


def test_incremental_index_after_appending(indexed, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("Borscht is a sour soup common in Eastern Europe.\nThe ship's cat slept on the rope.\n")
    encoded = sbert("encode", extra, "-o", indexed, "-q")  # the store's (hash) model, inherited
    assert encoded.exit_code == 0 and encoded.stderr == "", encoded.output
    # Not indexed yet: searched exactly next to the index, with a note saying so.
    result = sbert("search", indexed, "sour soup in Eastern Europe", "-k", "1", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert jsonl(result)[0]["text"].startswith("Borscht")
    assert result.stderr == (
        f"sbert: {indexed}: 1 shard(s) (2 rows) were encoded after the index was built; searching them exactly "
        f"(run `sbert index {indexed}` to add them)\n"
    )
    result = sbert("index", indexed, "--no-bm25")
    assert result.exit_code == 0, result.output
    assert "updated the index: added 2 rows from 1 shard(s)" in result.stderr and "holds 502 rows" in result.stderr
    result = sbert("search", indexed, "sour soup in Eastern Europe", "-k", "1", "--format", "jsonl")
    assert jsonl(result)[0]["text"].startswith("Borscht") and result.stderr == ""


def test_rebuild_and_options(indexed):
    result = sbert(
        "index", indexed, "--no-bm25", "--rebuild", "--M", "8", "--ef-construction", "40", "--threads", "1", "-q"
    )
    assert result.exit_code == 0 and result.stderr == ""
    manifest = read_index_manifest(indexed)
    assert (manifest["M"], manifest["ef_construction"], manifest["count"]) == (8, 40, 500)
    result = sbert("search", indexed, "whale", "-k", "30", "--ef", "30", "--format", "csv")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 31


def corrupt(store: Path, how: str) -> None:
    manifest = read_index_manifest(store)
    graph = index_dir(store) / manifest["file"]
    if how == "truncated":
        graph.write_bytes(graph.read_bytes()[:4096])
    elif how == "missing":
        graph.unlink()
    elif how == "model":
        manifest["model"]["fingerprint"] = "sha256:feed"
        (index_dir(store) / INDEX_MANIFEST).write_text(json.dumps(manifest))
    elif how == "stale":
        first = manifest["shards"][0]
        first["sha256"] = "sha256:" + "0" * 64
        (index_dir(store) / INDEX_MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("no store", ["search", "{tmp}/nowhere", "whale"], "no such store"),
        ("no store to index", ["index", "{tmp}/nowhere"], "no such store"),
        ("no index", ["search", "{noindex}", "whale"], "no index yet; build one with: sbert index"),
        ("truncated", ["search", "{truncated}", "whale"], "index file is damaged"),
        ("missing file", ["search", "{missing}", "whale"], "index file is missing"),
        ("other model", ["search", "{model}", "whale"], "built from another model"),
        ("stale", ["search", "{stale}", "whale"], "the index is stale"),
        ("k zero", ["search", "{ok}", "whale", "-k", "0"], "must be at least 1"),
        ("empty query", ["search", "{ok}", ""], "the query is empty"),
        ("blank query", ["search", "{ok}", "whale", "  "], "query 2 is empty"),
        ("no query", ["search", "{ok}", "--format", "jsonl"], "no query given"),
        ("no queries file", ["search", "{ok}", "-f", "{tmp}/none.txt"], "none.txt: no such file"),
        ("bad ef", ["search", "{ok}", "whale", "--ef", "0"], "--ef 0: must be at least 1"),
        ("bad M", ["index", "{ok}", "--M", "1"], "--M 1: choose a value from 2 to 2048"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, sample_store, case, args, message):
    stores = {}
    for name in ("noindex", "truncated", "missing", "model", "stale", "ok"):
        if "{" + name + "}" in " ".join(args):
            path = tmp_path / name
            shutil.copytree(sample_store, path)
            if name != "noindex":
                assert sbert("index", path, "-q", "--no-bm25").exit_code == 0
            if name in ("truncated", "missing", "model", "stale"):
                corrupt(path, name)
            stores[name] = str(path)
    result = sbert(*(a.format(tmp=tmp_path, **stores) for a in args))
    damaged = case in ("truncated", "missing file")  # a damaged store is a runtime failure, not bad input
    assert result.exit_code == (1 if damaged else 2), (case, result.output)
    assert message in result.stderr, (case, result.stderr)
    assert result.stderr.startswith("sbert: error: ") and len(result.stderr.strip().splitlines()) == 1, case
    assert "Traceback" not in result.output
    assert result.stdout == ""
    if case in ("truncated", "missing"):
        assert "--rebuild" in result.stderr
    if case in ("no index", "stale"):
        assert "--exact" in result.stderr


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ["search", "{store}", "whale", "--format", "xml"],
            "Invalid value for '--format': 'xml' is not one of 'table', 'jsonl', 'tsv', 'csv', 'json'.",
        ),
        (
            ["index", "{store}", "--space", "hamming"],
            "Invalid value for '--space': 'hamming' is not one of 'auto', 'cosine', 'ip', 'l2'.",
        ),
    ],
)
def test_bad_choice_is_a_usage_error(store, args, error):
    command = args[0]
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    result = sbert(*(a.format(store=store) for a in args))
    assert result.exit_code == 2
    assert result.stdout == ""
    usage = "[OPTIONS] STORE [QUERY...]" if command == "search" else "[OPTIONS] STORE"
    assert result.stderr == f"Usage: sbert {command} {usage}\nTry 'sbert {command} -h' for help.\n\nError: {error}\n"
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_damaged_index_still_allows_exact_and_index_repairs_it(indexed):
    corrupt(indexed, "truncated")
    result = sbert("search", indexed, "whale", "--exact", "-k", "1", "--format", "jsonl")
    assert result.exit_code == 0 and len(jsonl(result)) == 1
    result = sbert("index", indexed, "--no-bm25")
    assert result.exit_code == 0 and "rebuilding the index: " in result.stderr and "damaged" in result.stderr
    assert sbert("search", indexed, "whale", "-k", "1", "--format", "jsonl").exit_code == 0


@pytest.mark.slow
def test_shell_pipeline_in_subprocesses(real_sample_store, tmp_path, sample_texts):
    indexed = tmp_path / "store"  # the real model's store: a subprocess cannot use the hash model
    shutil.copytree(real_sample_store, indexed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "sbert_cli"]
    index = subprocess.run([*run, "index", str(indexed), "--rebuild"], capture_output=True, text=True, env=env)
    assert index.returncode == 0, index.stderr
    assert "built the index" in index.stderr
    queries = f"{sample_texts[3]}\n{sample_texts[300]}\n"
    search = subprocess.run(
        [*run, "search", str(indexed), "-", "-k", "2"], input=queries, capture_output=True, text=True, env=env
    )
    assert search.returncode == 0, search.stderr
    hits = [json.loads(line) for line in search.stdout.splitlines()]  # not a terminal: jsonl by default
    assert [h["text"] for h in hits if h["rank"] == 1] == [sample_texts[3], sample_texts[300]]
    missing = subprocess.run(
        [*run, "search", str(indexed.parent / "nope"), "whale"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]


def test_exact_output_of_a_small_store(tmp_path):
    from fakes import HASH_MODEL, hash_embed

    corpus = tmp_path / "fruit.txt"
    corpus.write_text("red apples and green pears\n\na red car on the road\ngreen fields in spring\n")
    store = tmp_path / "store"
    assert sbert("encode", corpus, "-o", store, "--model", HASH_MODEL, "-q").exit_code == 0
    texts = {1: "red apples and green pears", 3: "a red car on the road", 4: "green fields in spring"}
    query = hash_embed("red apples", 64)
    scores = {line: float(query @ hash_embed(text, 64)) for line, text in texts.items()}
    ranked = sorted(scores, key=lambda line: -scores[line])
    assert ranked[0] == 1  # the text with both words
    head = "query\trank\tid\tscore\tcosine\ttext\tsource\tline\tkey\tchunk\tstart\tend\n"
    expected = head + "".join(
        f"red apples\t{rank}\t{line}\t{scores[line]:.4f}\t{scores[line]:.4f}\t{texts[line]}\t{corpus}\t{line}\t"
        f"\t0\t0\t{len(texts[line])}\n"
        for rank, line in enumerate(ranked, start=1)
    )
    for extra in (["--exact"], ["--mode", "dense"]):
        if extra != ["--exact"]:
            assert sbert("index", store, "-q", "--no-bm25").exit_code == 0
        result = sbert("search", store, "red apples", "-k", "3", "--format", "tsv", *extra)
        assert result.exit_code == 0, result.output
        assert result.stdout == expected
        assert result.stderr == ""


def test_k_larger_than_the_store_returns_every_row_with_key_and_cosine(tmp_path):
    from fakes import HASH_MODEL, hash_embed

    records = tmp_path / "notes.jsonl"
    notes = {"n1": "red apples and green pears", "n2": "a red car on the road", "n3": "green fields in spring"}
    records.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in notes.items()))
    store = tmp_path / "store"
    assert sbert("encode", records, "-o", store, "--model", HASH_MODEL, "--id-field", "id", "-q").exit_code == 0
    assert sbert("index", store, "-q").exit_code == 0
    query = hash_embed("red apples", 64)
    for mode in ("dense", "keyword", "hybrid"):
        result = sbert("search", store, "red apples", "--mode", mode, "--format", "jsonl")  # default -k 10
        assert result.exit_code == 0, result.output
        hits = jsonl(result)
        assert len(hits) == (2 if mode == "keyword" else 3)  # keyword: only texts sharing a term
        for hit in hits:
            assert notes[hit["key"]] == hit["text"]
            assert hit["cosine"] == pytest.approx(float(query @ hash_embed(hit["text"], 64)), abs=1e-5)
    result = sbert("search", store, "red apples", "-k", "100", "--exact", "--format", "jsonl")
    assert result.exit_code == 0 and [h["key"] for h in jsonl(result)][0] == "n1" and len(jsonl(result)) == 3


@pytest.mark.parametrize("script", ["bench_hybrid.py", "bench_quantized.py"])
def test_search_benchmarks_say_in_one_line_what_data_they_need(tmp_path, script):
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--data", str(tmp_path / "none")]
    if script == "bench_quantized.py":
        command += ["--work", str(tmp_path / "work")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stdout == ""  # benchmarks/_data.py: bad input, as the CLI
    assert done.stderr.startswith(f"{script}: needs ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists()
