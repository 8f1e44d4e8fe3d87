"""Resuming: a run that dies in the middle (in-process on the hash model; kill -9 of a real
process, marked slow), run again, compared with a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import HASH_MODEL, HashEncoder, Messages

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.store.atomic import sha256_file
from sbert_cli.store.store import Store

SBERT = [sys.executable, "-m", "sbert_cli"]


def read_store(path: Path) -> pd.DataFrame:
    store = Store.open(path)
    for shard in store.shards:  # every listed shard is whole: its checksum matches
        assert sha256_file(path / shard.file) == shard.sha256
    return pd.concat([pd.read_parquet(path / s.file) for s in store.shards], ignore_index=True)


def committed_shards(store: Path) -> int:
    try:
        return len(json.loads((store / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, ValueError):
        return 0


class DiesOnWindow(HashEncoder):
    """The hash model, dying (like a Ctrl-C or a crash) when asked for window `n`."""

    def __init__(self, n: int) -> None:
        super().__init__(64)
        self.n = n

    def run(self, window):
        if self.calls + 1 == self.n:
            raise KeyboardInterrupt
        return super().run(window)


def test_interrupted_run_resumes_to_the_same_store(tmp_path, sample_texts):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sample_texts[:100]) + "\n", encoding="utf-8")
    options = EncodeOptions(model=HASH_MODEL, shard_size=30)  # windows never straddle a shard

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        encode_corpus([str(corpus)], broken, options, encoder=DiesOnWindow(3))
    assert [s.rows for s in Store.open(broken).shards] == [30, 30]  # two windows committed, then it died
    assert len(read_store(broken)) == 60
    (entry,) = Store.open(broken).manifest.inputs
    assert (entry.rows_done, entry.last_line, entry.complete) == (60, 60, False)

    reporter = Messages()
    summary = encode_corpus([str(corpus)], broken, EncodeOptions(model=HASH_MODEL, shard_size=30), reporter=reporter)
    assert reporter.lines == [f"{corpus}: resuming after line 60 (60 rows done)"]
    assert (summary.rows, summary.store_rows, summary.inputs_resumed) == (40, 100, [str(corpus)])

    clean = tmp_path / "clean"
    encode_corpus([str(corpus)], clean, EncodeOptions(model=HASH_MODEL, shard_size=30))
    a, b = read_store(broken), read_store(clean)
    assert a["id"].tolist() == b["id"].tolist() and a["id"].is_unique and len(a) == 100
    assert a["text"].tolist() == b["text"].tolist() == sample_texts[:100]
    assert a["line"].tolist() == b["line"].tolist() == list(range(1, 101))
    np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
    assert [s.rows for s in Store.open(broken).shards] == [30, 30, 30, 10]
    assert sorted(p.name for p in (broken / "shards").iterdir()) == sorted(p.name for p in (clean / "shards").iterdir())
    assert Store.open(broken).manifest.inputs[0].complete


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_store(tmp_path, sample_texts, encoder):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sample_texts[:320]) + "\n", encoding="utf-8")
    args = [str(corpus), "--shard-size", "40", "--device", "cpu", "--dtype", "fp32"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*SBERT, "encode", *args, "-o", str(killed), "-q"], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while committed_shards(killed) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_store(killed)
    assert 80 <= len(partial) and partial["line"].nunique() < 320  # what was committed is intact and readable

    resumed = subprocess.run([*SBERT, "encode", *args, "-o", str(killed)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after line" in resumed.stderr

    clean = tmp_path / "clean"
    encode_corpus([str(corpus)], clean, EncodeOptions(device="cpu", dtype="fp32", shard_size=40))
    a, b = read_store(killed), read_store(clean)
    assert a["id"].tolist() == b["id"].tolist()
    assert a["id"].is_unique and a["line"].nunique() == 320  # long paragraphs are several chunks
    assert a["text"].tolist() == b["text"].tolist()
    firsts = a[a["chunk"] == 0]["text"].tolist()  # each record's first chunk starts its text
    assert len(firsts) == 320 and all(t.startswith(c) for t, c in zip(sample_texts[:320], firsts, strict=True))
    assert a["line"].tolist() == b["line"].tolist()
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-6)
    assert [s.rows for s in Store.open(killed).shards] == [s.rows for s in Store.open(clean).shards]
    assert sorted(p.name for p in (killed / "shards").iterdir()) == sorted(p.name for p in (clean / "shards").iterdir())


@pytest.mark.slow
def test_real_process_bad_input_and_stdin(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good\n\xff\xfe bad\n")
    result = subprocess.run([*SBERT, "encode", str(bad), "-o", str(tmp_path / "s")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sbert: error: {bad}:2: not valid utf-8 (byte 1 of the line); "
        "use --encoding to name the right one or --errors replace to go on"
    ]
    assert not (tmp_path / "s").exists()

    piped = subprocess.run(
        [*SBERT, "encode", "-", "-o", str(tmp_path / "piped"), "--device", "cpu"],
        input="one sentence\ntwo sentences\n",
        capture_output=True,
        text=True,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == ""
    assert "\x1b[" not in piped.stderr  # no colour when stderr is not a terminal
    assert read_store(tmp_path / "piped")["text"].tolist() == ["one sentence", "two sentences"]
