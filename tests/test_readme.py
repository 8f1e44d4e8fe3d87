"""Every command README.md shows, run in the order written, as a user would paste them.

The ```bash blocks are read from README.md itself (so the test follows the README as it changes)
and each line runs through bash in a temporary directory holding what a fresh clone holds for
them: `sample_corpus/` and `examples/`, copied as they are (no input is made up here: a command
that needs a file the repository does not ship fails). The real bundled model runs every
command. Only what cannot run inside a test is left out, each with its reason in SKIPPED:
creating a venv and pip installs (the test already runs in one), the test suite itself, and the
benchmark scripts (minutes; see benchmarks/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
    """What a fresh clone holds for the README's commands: the sample corpus and examples/."""
    for folder in ("sample_corpus", "examples"):
        shutil.copytree(ROOT / folder, work / folder)


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
    ("2> encode.log", lambda w, r: "sbert: encoded 24 texts from 1 input(s)" in (w / "encode.log").read_text()),
    ("> hits.jsonl", lambda w, r: len(lines_of(w / "hits.jsonl")) == 3 * 10),
    ("- --exact --format tsv", lambda w, r: r.stdout.splitlines()[0].split("\t")[:3] == ["query", "rank", "id"]),
    ("--gold-column 4 --format json", lambda w, r: json.loads(r.stdout)["pairs"] == 30),
    ("> scored.jsonl", lambda w, r: len(lines_of(w / "scored.jsonl")) == 4),
    (
        "> clusters.jsonl",
        lambda w, r: (
            [set(json.loads(x)) >= {"source", "line", "key"} for x in lines_of(w / "clusters.jsonl")] == [True] * 42
        ),
    ),
    (
        "--store store/",
        lambda w, r: r.stdout.splitlines()[0].split("\t") == ["id", "source", "line", "key", "score", "text"],
    ),
    ("--store store/", lambda w, r: len(r.stdout.splitlines()) == 1 + 42),
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
