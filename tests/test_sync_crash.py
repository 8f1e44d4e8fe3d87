"""kill -9 during a sync, a removal and a compaction, then the same command again: the store (and
the index) an uninterrupted run gives. Real subprocesses on the hash model, with every commit
slowed down so that the kills land inside the work (slow tests)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sbert_cli.store.atomic import sha256_file
from sbert_cli.store.store import Store

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
WRAPPER = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
from fakes import hash_factory
from sbert_cli.encoding.loader import ENCODER_FACTORIES
import sbert_cli.store.atomic as atomic
ENCODER_FACTORIES["hash"] = hash_factory
_fsync_dir = atomic.fsync_dir
def slow_fsync_dir(path):
    time.sleep(0.04)  # every commit takes a while: a kill lands between or inside them
    _fsync_dir(path)
atomic.fsync_dir = slow_fsync_dir
from sbert_cli.cli import main
sys.argv = ["sbert", *sys.argv[1:]]
main()
"""


def sbert(wrapper: Path, *args: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(wrapper), *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def kill_during(wrapper: Path, store: Path, delay: float, *args: str | Path) -> bool:
    """Start the command, wait until it holds the store lock, let it work `delay` s, kill -9.
    False when it finished first (then there was nothing to interrupt)."""
    proc = subprocess.Popen([sys.executable, str(wrapper), *map(str, args)], stderr=subprocess.DEVNULL)
    lock = store / ".lock"
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            break
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def contents(store: Path) -> pd.DataFrame:
    """The store's rows by id, after checking every listed shard is whole and nothing else is there."""
    opened = Store.open(store)
    listed = {s.file for s in opened.shards}
    assert {f"shards/{p.name}" for p in (store / "shards").iterdir()} == listed
    for shard in opened.shards:
        assert sha256_file(store / shard.file) == shard.sha256
    return pd.read_parquet(store / "shards").sort_values("id").reset_index(drop=True)


def assert_same_store(a: Path, b: Path) -> None:
    x, y = contents(a), contents(b)
    assert x[["id", "source", "line", "text"]].equals(y[["id", "source", "line", "text"]])
    np.testing.assert_array_equal(np.stack(x.embedding), np.stack(y.embedding))


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def setup(tmp_path: Path, sample_texts: list[str]):
    """A wrapper script, a folder of 10 files synced into a store (5-row shards: many commits),
    and the night's changes applied to the folder (not yet synced)."""
    wrapper = tmp_path / "sbert_hash.py"
    wrapper.write_text(WRAPPER)
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(10):
        write(docs / f"f{n}.txt", sample_texts[20 * n : 20 * n + 20])
    base = tmp_path / "base"
    sbert(wrapper, "encode", docs, "-o", base, "--sync", "--model", "hash:32", "--shard-size", "5", "-q")
    for n in (0, 3, 6):  # edits: one line replaced, two added
        lines = sample_texts[20 * n : 20 * n + 20]
        lines[5] = f"An edited paragraph number {n}."
        write(docs / f"f{n}.txt", [*lines, *sample_texts[300 + n : 302 + n]])
    (docs / "f1.txt").unlink()
    os.rename(docs / "f2.txt", docs / "moved.txt")
    for n in range(3):
        write(docs / f"new{n}.txt", sample_texts[400 + 10 * n : 410 + 10 * n])
    return wrapper, docs, base


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.8, 1.5])
def test_killed_sync_then_sync_again_gives_the_uninterrupted_store(setup, tmp_path, delay):
    wrapper, docs, base = setup
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(base, clean)
    shutil.copytree(base, killed)
    sbert(wrapper, "encode", docs, "-o", clean, "--sync", "-q")
    interrupted = kill_during(wrapper, killed, delay, "encode", docs, "-o", killed, "--sync", "-q")
    sbert(wrapper, "encode", docs, "-o", killed, "--sync", "-q")
    assert_same_store(killed, clean)
    again = sbert(wrapper, "encode", docs, "-o", killed, "--sync")
    assert "+0 new, ~0 changed (0 records re-encoded), -0 removed, >0 renamed, 12 unchanged" in again.stderr
    assert interrupted or delay > 0  # the first kill always lands


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1])
def test_killed_rm_then_rm_again(setup, tmp_path, delay):
    wrapper, docs, base = setup
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(base, clean)
    shutil.copytree(base, killed)
    names = [str(docs / f"f{n}.txt") for n in (4, 5, 7)]
    sbert(wrapper, "rm", clean, *names)
    kill_during(wrapper, killed, delay, "rm", killed, *names)
    committed = not {e.source for e in Store.open(killed).manifest.inputs} & set(names)
    again = subprocess.run([sys.executable, str(wrapper), "rm", killed, *names], capture_output=True, text=True)
    # Killed after its commit: the inputs are gone, so naming them again is an error (exit 2),
    # and the run still clears the files the killed one had left.
    assert again.returncode == (2 if committed else 0), again.stderr
    assert_same_store(killed, clean)


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3])
def test_killed_index_update_and_compaction_then_again(setup, tmp_path, delay):
    wrapper, docs, base = setup
    sbert(wrapper, "index", base, "--no-bm25", "-q")
    sbert(wrapper, "rm", base, *(str(docs / f"f{n}.txt") for n in (4, 5, 7)))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(base, clean)
    shutil.copytree(base, killed)
    sbert(wrapper, "index", clean, "--no-bm25", "-q")  # 60 of 200 deleted: compacted
    kill_during(wrapper, killed, delay, "index", killed, "--no-bm25", "-q")
    sbert(wrapper, "index", killed, "--no-bm25", "-q")
    assert_same_store(killed, clean)
    queries = ["the whale", "a letter from his mother", "war and peace"]
    for query in queries:
        a = sbert(wrapper, "search", killed, query, "-k", "20", "--format", "tsv").stdout
        b = sbert(wrapper, "search", clean, query, "-k", "20", "--format", "tsv").stdout
        assert a == b
