"""The library from Python: progress goes through a Reporter (never print), and calls leave no
process-wide state behind (torch threads, transformers' logging, the shared encoders)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fakes import HASH_MODEL

from sbert_cli.encoding import runner
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.progress import ProgressUpdate
from sbert_cli.retrieval import build_index

STAGES = {"read", "tokenize", "model", "write"}


class ListReporter:
    """A Reporter that keeps everything it is told."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.updates: list[ProgressUpdate] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def progress(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


@pytest.fixture()
def two_inputs(tmp_path: Path, sample_texts: list[str]) -> list[str]:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(sample_texts[:70]) + "\n")
    b.write_text("\n".join(sample_texts[70:120]) + "\n\n")
    return [str(a), str(b)]


def test_encode_reports_progress_through_the_reporter(tmp_path, two_inputs, monkeypatch, capsys):
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)  # an update after every window
    reporter = ListReporter()
    summary = encode_corpus(
        two_inputs, tmp_path / "store", EncodeOptions(model=HASH_MODEL, shard_size=25), reporter=reporter
    )
    assert summary.rows == 120
    updates = reporter.updates
    assert len(updates) >= 6  # windows of at most 25 rows (aligned to shards), and the end of each input
    assert all(u.task == "encoding" and u.unit == "records" and u.chunks is None and u.total == 120 for u in updates)
    done = [u.done for u in updates]
    assert done == sorted(done) and done[0] > 0 and done[-1] == 120
    assert 25 in done and 70 in done  # counted as rows are committed, input by input
    assert [u.final for u in updates] == [False] * (len(updates) - 1) + [True]
    assert {u.current for u in updates[:-1]} == set(two_inputs) and updates[-1].current is None
    final = updates[-1]
    assert set(final.stages) == STAGES and all(s >= 0 for s in final.stages.values())
    assert final.stages == summary.stages and final.tokens == summary.tokens > 0 and final.elapsed > 0
    assert final.bound_by in STAGES
    assert all(set(u.stages) <= STAGES for u in updates)
    assert reporter.messages == []
    assert capsys.readouterr() == ("", "")  # the library never prints

    again = ListReporter()
    skipped = encode_corpus(two_inputs, tmp_path / "store", EncodeOptions(model=HASH_MODEL), reporter=again)
    assert again.messages == []  # one line per skipped input goes to the log at debug level (-v)
    assert skipped.inputs_skipped == two_inputs and skipped.rows == 0
    assert again.updates == []


def test_build_index_reports_progress_and_rebuilds_through_the_reporter(tmp_path, sample_store, capsys):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store)
    reporter = ListReporter()
    summary = build_index(store, reporter=reporter)
    assert summary.added == 500
    dense = [u for u in reporter.updates if u.task == "indexing"]
    assert [(u.unit, u.total) for u in dense] == [("rows", 500)] * 4
    assert [u.done for u in dense] == [150, 300, 500, 500]  # shard by shard (150, 150, 200), then the commit
    assert [u.final for u in dense] == [False, False, False, True]
    assert reporter.messages == []

    again = ListReporter()
    build_index(store, rebuild=True, reporter=again)
    assert again.messages[0] == "rebuilding the index: asked with --rebuild"
    dense = [u for u in again.updates if u.task == "indexing"]
    assert dense[-1].final and dense[-1].done == 500
    assert capsys.readouterr() == ("", "")


def test_library_calls_leave_no_global_state(tmp_path, encoder):
    import torch
    from transformers.utils import logging as hf_logging

    from sbert_cli.encoding.encoder import Encoder

    threads = torch.get_num_threads()
    other = 1 if threads != 1 else 2
    batch_tokens = encoder.batch_tokens
    hf_verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()  # not the default, so "put back" cannot mean "reset"
    try:
        fresh = Encoder(spec=encoder.spec, device="cpu", dtype="fp32", threads=other)
        assert fresh.encode(["A man is eating food."]).shape == (1, 384)
        assert torch.get_num_threads() == threads
        assert hf_logging.get_verbosity() == hf_logging.INFO

        corpus = tmp_path / "c.txt"
        corpus.write_text("A man is eating food.\nA man is riding a horse.\n")
        options = EncodeOptions(device="cpu", dtype="fp32", threads=other, batch_tokens=64)
        assert encode_corpus([str(corpus)], tmp_path / "store", options).rows == 2
        assert torch.get_num_threads() == threads
        assert hf_logging.get_verbosity() == hf_logging.INFO
        # The run used the session's shared encoder: its settings are as they were.
        assert (encoder.threads, encoder.batch_tokens) == (None, batch_tokens)
    finally:
        hf_logging.set_verbosity(hf_verbosity)
