"""Every command README.md shows, run in the order written, as a user would paste them.

The ```bash blocks are read from README.md itself (so the test follows the README as it changes)
and each line runs through bash in a temporary directory holding a copy of the project's sample
data: `sample_corpus/` (the same three books, cut to their first paragraphs so that the real model
encodes them in seconds) and the inputs the examples name (corpus.txt, docs/*.jsonl,
reviews.csv.gz, big.txt.gz, queries.txt, sts-dev.csv, pairs.jsonl), made from the same books and
the STS sample. The real bundled model runs every command. Only what cannot run inside a test is
left out, each with its reason in SKIPPED: creating a venv and pip installs (the test already
runs in one), the test suite itself, and the benchmark scripts (minutes; see benchmarks/).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARAGRAPHS_PER_BOOK = 12
# Pieces of `a && b && c` chains that set up a machine rather than use sbert.
SKIPPED = {
    "python3 -m venv": "creates the venv this test already runs in",
    ". .venv/bin/activate": "the test runs inside the activated venv",
    "pip install": "installs into the venv this test already runs in",
    "python -m pytest": "the test suite itself",
    "python benchmarks/": "a benchmark (minutes); its figures are in benchmarks/README.md",
}


def readme_commands(text: str) -> list[str]:
    """The README's bash lines in order, setup pieces of `&&` chains dropped (see SKIPPED)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            kept = [p.strip() for p in line.split("&&") if not any(p.strip().startswith(s) for s in SKIPPED)]
            if kept:
                commands.append(" && ".join(kept))
    return commands


def make_inputs(work: Path) -> None:
    """The sample data and the files the README's examples read, in `work`."""
    paragraphs = []
    for book in sorted((ROOT / "sample_corpus").glob("*.txt")):
        lines = [line for line in book.read_text(encoding="utf-8").splitlines() if line.strip()]
        (work / "sample_corpus").mkdir(exist_ok=True)
        (work / "sample_corpus" / book.name).write_text("\n".join(lines[:PARAGRAPHS_PER_BOOK]) + "\n", "utf-8")
        paragraphs += lines[PARAGRAPHS_PER_BOOK : PARAGRAPHS_PER_BOOK + 8]
    (work / "corpus.txt").write_text("\n".join(paragraphs[:8]) + "\n", encoding="utf-8")
    (work / "docs").mkdir()
    docs = [{"doc_id": f"d{i}", "body": text} for i, text in enumerate(paragraphs[8:16])]
    (work / "docs" / "part1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    reviews = "review,stars\n" + "".join(
        f'"{t[:200].replace(chr(34), "")}",{i % 5 + 1}\n' for i, t in enumerate(paragraphs[16:])
    )
    (work / "reviews.csv.gz").write_bytes(gzip.compress(reviews.encode("utf-8")))
    (work / "big.txt.gz").write_bytes(gzip.compress("\n".join(paragraphs[:6]).encode("utf-8") + b"\n"))
    (work / "queries.txt").write_text("a storm at sea\nwho is the captain?\na ball in Moscow\n", encoding="utf-8")
    shutil.copytree(ROOT / "examples", work / "examples")  # the documents example the repository ships
    shutil.copy(FIXTURES / "sts-sample.tsv", work / "sts-dev.csv")
    shutil.copy(FIXTURES / "sts-sample.tsv", work / "sts-train.csv")
    # A BEIR-layout retrieval set: each query's answer is the paragraph it was cut from.
    corpus = [{"_id": f"p{i}", "title": "", "text": t} for i, t in enumerate(paragraphs[:12])]
    queries = [{"_id": f"q{i}", "text": " ".join(t.split()[:8])} for i, t in enumerate(paragraphs[:12])]
    (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (work / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\tp{i}\t1\n" for i in range(12))
    (work / "qrels.tsv").write_text(qrels, encoding="utf-8")
    pairs = [("how do whales breathe?", paragraphs[0]), ("a ball in Moscow", paragraphs[1])]
    (work / "pairs.jsonl").write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs), "utf-8")


def run(command: str, work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )


def lines_of_text(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def lines_of(path: Path) -> list[str]:
    return lines_of_text(path.read_text(encoding="utf-8"))


# What a command must leave behind besides exit code 0: (pattern in the command, check).
CHECKS = [
    ("-o sample_store", lambda w, r: (w / "sample_store" / "manifest.json").is_file()),
    ('search sample_store "a storm at sea" -k 3', lambda w, r: len(lines_of_text(r.stdout)) == 3),
    ("> hits.jsonl", lambda w, r: len(lines_of(w / "hits.jsonl")) == 3 * 10),
    ("--format tsv", lambda w, r: r.stdout.splitlines()[0].split("\t")[:3] == ["query", "rank", "id"]),
    ("--gold-column 4 --format json", lambda w, r: json.loads(r.stdout)["pairs"] == 50),
    ("> scored.jsonl", lambda w, r: len(lines_of(w / "scored.jsonl")) == 2),
    ("> clusters.jsonl", lambda w, r: len(lines_of(w / "clusters.jsonl")) > 8),
    ("-o dups.parquet", lambda w, r: (w / "dups.parquet").is_file()),
    ("--plot clusters.png", lambda w, r: (w / "clusters.png").stat().st_size > 0),
]


def test_readme_commands_are_found_in_order():
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == "sbert encode sample_corpus/ -o sample_store"  # setup dropped, the sbert part kept
    assert not any(c.startswith(tuple(SKIPPED)) for c in commands)
    assert sum(c.startswith("sbert ") or "| sbert " in c for c in commands) == len(commands)


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    make_inputs(tmp_path)
    for command in readme_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        result = run(command, tmp_path)
        assert result.returncode == 0, f"README command failed: {command}\n{result.stderr}"
        for pattern, check in CHECKS:
            if pattern in command:
                assert check(tmp_path, result), f"README command ran but did not do its job: {command}\n{result}"
