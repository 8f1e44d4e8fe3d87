"""The command line as a person (and a cron job) meets it: --version, progress lines when stderr
is a log, -v and --quiet, clean help and usage errors, pair files never silently mis-read, and
search tables fitted to the terminal. Plumbing runs on the hash stand-in model (tests/fakes.py)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from fakes import HASH_MODEL
from typer.testing import CliRunner

from sbert_cli import __version__
from sbert_cli.cli import app
from sbert_cli.cli.progress import CliReporter, plain_line
from sbert_cli.progress import ProgressUpdate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HASH = ["--model", HASH_MODEL]
COMMANDS = ("encode", "index", "search", "cluster", "similarity")


def sbert(*args: str | Path, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    lines = (FIXTURES / "books_2k.txt").read_text(encoding="utf-8").splitlines()[:60]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- version -----------------------------------------------------------------------------------------
def test_version_flag_prints_sbert_and_its_engines():
    result = sbert("--version")
    assert result.exit_code == 0
    assert re.fullmatch(rf"sbert {re.escape(__version__)} \(Python \d+\.\d+\.\d+; torch [^,]+, .*\)\n", result.stdout)


def test_version_in_verbose_output_and_in_the_manifest(tmp_path, corpus):
    store = tmp_path / "store"
    result = sbert("encode", corpus, "-o", store, *HASH, "-v")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"sbert: sbert {__version__} (Python ")
    assert json.loads((store / "manifest.json").read_text())["sbert_version"] == __version__


# -- progress, quiet, verbose -------------------------------------------------------------------------
def test_plain_progress_lines_every_interval_on_a_log(monkeypatch, tmp_path):
    clock = iter([100.0, 103.0, 105.5, 106.0, 111.0])
    monkeypatch.setattr("sbert_cli.cli.progress.time.monotonic", lambda: next(clock))
    log = (tmp_path / "log").open("w+", encoding="utf-8")  # a file, as `2> log` or cron gives
    reporter = CliReporter(interval=5.0, stream=log)
    updates = [
        ProgressUpdate("encoding", 100, 1000, 10.0, 5000, "a.txt"),  # starts the clock: no line yet
        ProgressUpdate("encoding", 200, 1000, 13.0, 10000, "a.txt"),  # 3 s in: none
        ProgressUpdate("encoding", 300, 1000, 15.5, 15000, "b.txt"),  # 5.5 s: a line
        ProgressUpdate("encoding", 400, None, 16.0, 20000, "-"),  # 0.5 s after it: none
        ProgressUpdate("encoding", 900, None, 21.0, 45000, None, final=True),  # the summary says it
    ]
    for update in updates:
        reporter.progress(update)
    log.seek(0)
    assert log.read() == (
        "sbert: encoding: 300/1,000 texts (30%), 19 texts/s, 968 tokens/s, 16s elapsed, ETA 36s; b.txt\n"
    )
    assert plain_line(ProgressUpdate("indexing", 7, None, 2.0, unit="rows")) == "indexing: 7 rows, 4 rows/s, 2s elapsed"


def test_encode_to_a_log_prints_progress_and_one_summary_line(tmp_path, corpus):
    result = sbert("encode", corpus, "-o", tmp_path / "store", *HASH, "--progress-interval", "0")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(re.fullmatch(r"sbert: encoding: \d+/60 records \(\d+%\), .* records/s, .*", line) for line in lines)
    assert re.fullmatch(
        r"sbert: encoded 60 texts from 1 input\(s\) into 1 shard\(s\) in [\d.]+ s \(.*\); skipped blank: 0; "
        rf"truncated: \d+; store {re.escape(str(tmp_path / 'store'))} now has 60 rows; stages: read .*; bound by \w+",
        lines[-1],
    )


def test_quiet_prints_nothing_but_errors(tmp_path, corpus):
    quiet = sbert("encode", corpus, "-o", tmp_path / "store", *HASH, "-q", "--progress-interval", "0")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    failed = sbert("encode", tmp_path / "missing.txt", "-o", tmp_path / "store", *HASH, "-q")
    assert failed.exit_code == 2 and failed.stderr.startswith("sbert: error: ")


def test_runtime_failures_are_one_line_and_a_traceback_under_verbose(monkeypatch, tmp_path, corpus):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr("sbert_cli.encoding.runner.encode_corpus", broken)
    plain = sbert("encode", corpus, "-o", tmp_path / "store", *HASH)
    assert plain.exit_code == 1
    assert plain.stderr == "sbert: error: RuntimeError: the disk caught fire (run with -v for the traceback)\n"
    verbose = sbert("encode", corpus, "-o", tmp_path / "store", *HASH, "-v")
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last):" in verbose.stderr
    assert verbose.stderr.endswith(
        "RuntimeError: the disk caught fire\nsbert: error: RuntimeError: the disk caught fire\n"
    )


def test_verbose_says_what_was_chosen_and_why():
    from sbert_cli.encoding.explain import explain
    from sbert_cli.encoding.loader import ModelSettings
    from sbert_cli.encoding.model import load_spec

    spec = load_spec(None)
    lines = explain(ModelSettings(dtype="fp32"), spec, "cpu", "fp32", "torch")
    assert lines[0] == f"model: all-MiniLM-L6-v2 (the bundled default), {spec.path}, fingerprint {spec.fingerprint}"
    assert lines[1] == (
        "pooling: mean over 384 values (its Pooling config); modules after pooling: none; "
        "normalize: yes (modules.json); vectors of 384"
    )
    assert lines[2:4] == [
        "prompt: none (the model has no default prompt)",
        "max_seq_length: 256 tokens (the model's config)",
    ]
    assert lines[4] == (
        "device: cpu (auto: no CUDA GPU); dtype: fp32 (--dtype, the store's, or measured faster by the encode runner); "
        "backend: torch (auto: ONNX Runtime for int8, torch otherwise)"
    )
    assert lines[5].startswith("batches: up to 2,048 padded tokens each (the cpu default; --batch-tokens overrides)")


# -- help and usage errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_cleanly(command):
    result = sbert(command, "--help")
    assert result.exit_code == 0
    for python_ism in ("<str>", "<int>", "<float>", "list[", "{", "}", "NoneType", "Value error"):
        assert python_ism not in result.stdout, (command, python_ism)


def test_usage_lines_and_choices_as_click_writes_them():
    assert sbert("encode", "--help").stdout.startswith("Usage: sbert encode [OPTIONS] INPUT...\n")
    assert sbert("search", "--help").stdout.startswith("Usage: sbert search [OPTIONS] STORE [QUERY...]\n")
    assert sbert("similarity", "--help").stdout.startswith("Usage: sbert similarity [OPTIONS] [SENTENCE...]\n")
    help_text = sbert("encode", "--help").stdout
    assert "--dtype [auto|fp32|bf16|fp16|int8]" in help_text
    assert "-o, --output STORE" in help_text and "--batch-tokens TOKENS" in help_text
    bad = sbert("encode", "in.txt", "-o", "store", "--dtype", "fp64")
    assert bad.exit_code == 2
    assert bad.stderr.endswith(
        "Error: Invalid value for '--dtype': 'fp64' is not one of 'auto', 'fp32', 'bf16', 'fp16', 'int8'.\n"
    )


# -- pair files: never a silently wrong number ---------------------------------------------------------
def test_pairs_without_text_columns_refuse_columns_that_are_not_sentences(tmp_path):
    sts = tmp_path / "sts-dev.csv"
    shutil.copy(FIXTURES / "sts-sample.tsv", sts)
    result = sbert("similarity", "--pairs", sts, "--gold-column", "4", *HASH)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"sbert: error: {sts}: no --text-columns given, and columns 0 and 1 do not look like sentences: "
        "column 0 holds only 3 distinct values in 50 rows (main-captions, main-forums, main-news); "
        "column 1 holds only 6 distinct values in 50 rows (MSRpar, MSRvid, answers-forums, headlines, ...); "
        "first row: 0=main-captions  1=MSRvid  2=2012test  3=0225  4=3.600  5=A toddler walks down a hallway.  "
        "6=A little girl is walking down a hallway.; name the two sentence columns, e.g. --text-columns 5,6\n"
    )
    named = sbert(
        "similarity", "--pairs", sts, "--gold-column", "4", "--text-columns", "5,6", *HASH, "--format", "json"
    )
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["pairs"] == 50


@pytest.mark.parametrize(
    "rows, why",
    [
        ([f"{i}\t{i * 2}\t0.5" for i in range(12)], "column 0 holds numbers; column 1 holds numbers"),
        ([f"doc{i}.txt\tA sentence number {i}.\t1" for i in range(3)], "column 0 holds file names"),
    ],
)
def test_pairs_guess_refuses_numbers_and_file_names(tmp_path, rows, why):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = sbert("similarity", "--pairs", path, "--gold-column", "2", *HASH)
    assert result.exit_code == 2
    assert f"do not look like sentences: {why}; first row: 0=" in result.stderr


def test_pairs_guess_accepts_sentences_and_word_pairs(tmp_path):
    words = tmp_path / "words.tsv"
    words.write_text("".join(f"{a}\t{b}\t{g}\n" for a, b, g in [("cat", "kitten", 4), ("car", "bus", 2)] * 3), "utf-8")
    result = sbert("similarity", "--pairs", words, "--gold-column", "2", *HASH, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"] == 6


# -- search output -----------------------------------------------------------------------------------
@pytest.fixture()
def hash_store(tmp_path, corpus) -> Path:
    store = tmp_path / "store"
    assert sbert("encode", corpus, "-o", store, *HASH, "-q").exit_code == 0
    return store


def test_search_table_is_one_line_per_hit_cut_to_the_terminal(hash_store):
    result = sbert(
        "search", hash_store, "the old prince", "-k", "3", "--exact", "--format", "table", env={"COLUMNS": "72"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "the old prince"
    assert re.fullmatch(r"rank +score:dense +text +source +line", lines[1])
    assert len(lines) == 5 and all(len(line) <= 72 for line in lines)
    assert all(re.match(r" +[123] +0\.\d{4}  \S.*…  .*corpus\.txt +\d+$", line) for line in lines[2:])
    assert "id" not in lines[1].split()  # source and line locate every hit: no 13-digit ids


def test_search_pipes_keep_full_rows(hash_store):
    result = sbert("search", hash_store, "the old prince", "-k", "2", "--exact", "--format", "jsonl")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(h) >= {"query", "rank", "id", "score", "text", "source", "line"} for h in hits] == [True, True]
    assert all(len(h["text"]) > 72 and "…" not in h["text"] for h in hits)


def test_ids_are_shown_where_nothing_else_locates_a_row():
    from sbert_cli.cli.output import format_table

    rows = [
        {
            "rank": 1,
            "score": 0.91234,
            "text": "A storm at sea, long and loud and wet.",
            "source": "a.txt",
            "line": 3,
            "id": 3,
        },
        {"rank": 2, "score": 0.5, "text": None, "source": None, "line": None, "id": 1099511627777},
    ]
    assert format_table(rows, ("rank", "score", "text", "source", "line", "id"), 60, "q") == [
        "q",
        "rank   score  text               source  line             id",
        "   1  0.9123  A storm at sea,…   a.txt      3              3",
        "   2  0.5000                                   1099511627777",
    ]
    located = format_table(rows[:1], ("rank", "score", "text", "source", "line", "id"), 40)
    assert located == ["rank   score  text          source  line", "   1  0.9123  A storm at…   a.txt      3"]


def test_help_starts_fast():
    """`sbert --help` imports neither torch nor transformers (the start-up figures: benchmarks/)."""
    import subprocess

    code = "import sys, sbert_cli.cli; sys.exit(any(m in sys.modules for m in ('torch', 'transformers', 'rich')))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- issue 22: what a new user hit --------------------------------------------------------------------
def test_empty_stdin_is_refused_like_an_empty_file(tmp_path):
    for given in ("", "\n  \n\n"):
        store = tmp_path / "store"
        result = sbert("encode", "-", "-o", store, *HASH, input=given)
        assert result.exit_code == 2, result.output
        assert result.stderr == "sbert: error: <stdin>: empty input (no non-blank records)\n"
        assert not store.exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = sbert("encode", empty, "-o", tmp_path / "store", *HASH)
    assert (result.exit_code, result.stderr) == (2, f"sbert: error: {empty}: empty input (no non-blank records)\n")


def test_stdin_looked_into_first_is_still_read_in_full(tmp_path):
    """The emptiness check reads stdin up to its first record; every byte still reaches the store."""
    import pandas as pd

    lines = ["", "  ", *[f"line {i} of a piped corpus" for i in range(3000)]]
    result = sbert("encode", "-", "-o", tmp_path / "store", *HASH, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path / "store" / "shards").sort_values("line")
    assert df["text"].tolist() == lines[2:]
    assert df["line"].tolist() == list(range(3, 3003))
    jsonl = "\n" + "".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(5))
    result = sbert("encode", "-", "--format", "jsonl", "-o", tmp_path / "jsonl", *HASH, input=jsonl)
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(tmp_path / "jsonl" / "shards")["text"].tolist() == [f"record {i}" for i in range(5)]


def test_progress_comes_per_batch_not_per_window(tmp_path, monkeypatch):
    """200 texts of four words are one window but four batches of the hash model (256 tokens, at
    most 64 texts): a log hears of each batch, not only of the window's end."""
    monkeypatch.setattr("sbert_cli.encoding.runner.PROGRESS_EVERY_S", 0.0)  # every update reaches the log
    corpus = tmp_path / "four.txt"
    corpus.write_text("".join(f"four words text {i}\n" for i in range(200)), encoding="utf-8")
    result = sbert("encode", corpus, "-o", tmp_path / "store", *HASH, "--progress-interval", "0")
    assert result.exit_code == 0, result.output
    done = re.findall(r"^sbert: encoding: (\d+)/200 records", result.stderr, re.M)
    assert done == ["64", "128", "192", "200"]


def test_a_missing_extra_is_one_rule_for_plot_and_ray(tmp_path, corpus, monkeypatch):
    """Same exit code (2: nothing ran, the user's install or options must change) and the same
    message shape naming the pip command, for --plot and --ray alike."""
    store = tmp_path / "store"
    assert sbert("encode", corpus, "-o", store, *HASH).exit_code == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails as if not installed
    monkeypatch.setitem(sys.modules, "ray", None)
    plot = sbert("cluster", store, "--k", "2", "--plot", tmp_path / "c.png")
    ray = sbert("encode", corpus, "-o", tmp_path / "ray_store", *HASH, "--ray")
    assert (plot.exit_code, plot.stderr) == (
        2,
        "sbert: error: --plot needs matplotlib, an optional extra: pip install 'sbert-cli[plot]'\n",
    )
    assert (ray.exit_code, ray.stderr) == (
        2,
        "sbert: error: --ray needs Ray, an optional extra: pip install 'sbert-cli[ray]'\n",
    )
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "ray_store").exists()


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# Each benchmark pointed at data that is not there: (script, its data options).
MISSING = "/nonexistent/sbert-data"
BENCH_DATA_ARGS = {
    "bench_cluster": ["--data", MISSING],
    "bench_encode": ["--corpus", f"{MISSING}/books/war_and_peace.txt"],
    "bench_gpu": ["--data", MISSING],
    "bench_hybrid": ["--data", MISSING],
    "bench_fusion": ["--data", MISSING],
    "bench_linkage": ["--data", MISSING],
    "bench_quantized": ["--data", MISSING, "--work", f"{MISSING}/work"],
    "bench_ray": ["--data", MISSING],
    "bench_scale": ["--data", MISSING, "--work", f"{MISSING}/work"],
    "bench_search": ["--sts", f"{MISSING}/stsb/sts-dev.csv", "--books", f"{MISSING}/books"],
    "bench_sts": ["--data", f"{MISSING}/stsb/sts-dev.csv"],
    "bench_train": ["--train", f"{MISSING}/stsb/sts-train.csv", "--dev", f"{MISSING}/stsb/sts-dev.csv"],
    "bench_engine": ["--data", MISSING],
    "bench_documents": ["--data", MISSING],
    "bench_chunk_overhead": ["--sts", f"{MISSING}/stsb/sts-train.csv"],
}
# These make their own data (random vectors, generated files) or use only sample_corpus/.
SELF_CONTAINED_BENCHMARKS = {"bench_startup", "bench_integrity", "bench_filter", "bench_serve", "bench_sync"}


def test_every_benchmark_is_checked_for_missing_data():
    scripts = {p.stem for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts - SELF_CONTAINED_BENCHMARKS == set(BENCH_DATA_ARGS)


@pytest.mark.parametrize("script", sorted(BENCH_DATA_ARGS))
def test_benchmarks_without_their_data_say_what_they_need(script):
    """From a clone without ../shared/data: one line naming what is missing, exit 2, no traceback."""
    import subprocess

    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *BENCH_DATA_ARGS[script]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(
        rf"{script}\.py: needs .+ (under|at) {re.escape(MISSING)}\S*, not found there(; pass --data DIR)?\n",
        result.stderr,
    )
    assert result.stdout == ""
