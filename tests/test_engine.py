"""The encode engine: parallel feeding, the out-of-memory retry, the result sink a GPU uses, and
the stage clock (`--dtype auto`'s calibration: test_calibrate.py). Plumbing runs on the hash model; the few real-model tests
use the session's shared fp32 load. No timing is asserted anywhere."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL, HashEncoder, Messages
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.batching import fit_batches, pad_rows, padded_size, plan_batches
from sbert_cli.encoding.feeder import default_workers, ordered_map, threaded
from sbert_cli.encoding.gpu import ResultSink, is_out_of_memory
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.encoding.windows import Batch
from sbert_cli.store.store import Store

WORDS = "the cat sat on a mat while seven quiet dogs watched every passing cloud drift east".split()


def corpus(tmp_path: Path, n: int = 400, name: str = "corpus.txt") -> Path:
    """`n` lines of 1-40 words (some repeated, so windows dedupe), deterministic."""
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(n)]
    lines[10:20] = lines[:10]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def contents(store: Path) -> tuple[list, np.ndarray, list[str]]:
    """Everything a store says about its rows: ids, vectors, and every shard's sha256."""
    opened = Store.open(store)
    ids, vectors = opened.load_embeddings()
    return list(ids), vectors, [s.sha256 for s in opened.manifest.shards]


def same_store(a: Path, b: Path) -> None:
    ids_a, vec_a, sha_a = contents(a)
    ids_b, vec_b, sha_b = contents(b)
    assert ids_a == ids_b
    assert np.array_equal(vec_a, vec_b)
    assert sha_a == sha_b  # byte-identical shards


# -- parallel feeding --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
def test_any_number_of_workers_gives_the_same_store(tmp_path, workers):
    """Windows are prepared in parallel but consumed in order: ids, vectors and shard bytes match
    a one-worker run (small shards, so many shard-aligned windows are in flight at once)."""
    inputs = [str(corpus(tmp_path, 400)), str(corpus(tmp_path, 150, "second.txt"))]
    one, many = tmp_path / "one", tmp_path / "many"
    encode_corpus(inputs, one, EncodeOptions(model=HASH_MODEL, shard_size=37, workers=1))
    encode_corpus(inputs, many, EncodeOptions(model=HASH_MODEL, shard_size=37, workers=workers))
    same_store(one, many)


def test_workers_option_on_the_command_line(tmp_path):
    path = corpus(tmp_path, 60)
    for n in ("1", "2"):
        result = CliRunner().invoke(
            app, ["encode", str(path), "-o", str(tmp_path / n), "--model", HASH_MODEL, "--workers", n, "-q"]
        )
        assert result.exit_code == 0, result.output
    same_store(tmp_path / "1", tmp_path / "2")
    result = CliRunner().invoke(app, ["encode", str(path), "-o", str(tmp_path / "0"), "--workers", "0"])
    assert result.exit_code == 2


def test_real_model_windows_are_identical_for_one_and_two_workers(encoder, sample_texts):
    texts = sample_texts[:8]
    windows = [(i, texts[i : i + 3]) for i in range(0, len(texts), 3)]
    one = [w.embeddings for w in encoder.encode_windows(iter(windows), workers=1)]
    two = [w.embeddings for w in encoder.encode_windows(iter(windows), workers=2)]
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_model_in_its_own_thread_gives_the_same_windows():
    """The GPU layout (model loop in a thread, caller writes meanwhile) on the hash model."""
    threaded_encoder = HashEncoder(16)
    threaded_encoder.model_thread = True
    texts = [" ".join(WORDS[: i % 15 + 1]) for i in range(300)]
    windows = [(i, texts[i : i + 50]) for i in range(0, 300, 50)]
    plain = list(HashEncoder(16).encode_windows(iter(windows), workers=2))
    in_thread = list(threaded_encoder.encode_windows(iter(windows), workers=2))
    assert [w.payload for w in in_thread] == [w.payload for w in plain]
    assert all(np.array_equal(a.embeddings, b.embeddings) for a, b in zip(plain, in_thread, strict=True))


def test_ordered_map_keeps_input_order_whatever_finishes_first():
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (10 - n % 10))
        return n * n

    assert list(ordered_map(slow_for_small, range(40), workers=4, depth=6)) == [n * n for n in range(40)]


def test_ordered_map_raises_errors_in_order_and_stops_its_threads():
    def items():
        yield from range(5)
        raise ValueError("bad line 6")

    before = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="bad line 6"):
        for value in ordered_map(lambda n: n, items(), workers=3, depth=2):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]

    def fail_on_3(n: int) -> int:
        if n == 3:
            raise KeyError(n)
        return n

    with pytest.raises(KeyError):
        list(ordered_map(fail_on_3, range(100), workers=3, depth=2))
    early = ordered_map(lambda n: n, range(10_000), workers=2, depth=2)
    assert next(early) == 0
    early.close()  # a consumer that stops early: reader and workers end
    assert threading.active_count() == before


def test_threaded_reraises_in_the_consumer():
    def items():
        yield 1
        raise RuntimeError("source failed")

    stream = threaded(items(), 2, "test")
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="source failed"):
        next(stream)


def test_default_workers_are_the_cores_the_model_does_not_need(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    assert default_workers("cuda", None) == 2  # each tokenizer call already uses every core
    assert default_workers("cpu", None) == 1  # torch takes every core; one worker still overlaps
    assert default_workers("cpu", 12) == 4
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert default_workers("cuda:1", 4) == 15  # one core per worker instead


# -- batches -------------------------------------------------------------------------------------


def test_pad_rows_matches_padding_row_by_row():
    ids = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    lengths = np.array([3, 1, 2, 4])
    positions = np.array([3, 0, 2])
    input_ids, mask = pad_rows(ids, lengths, positions, pad_id=0)
    assert input_ids.tolist() == [[11, 12, 13, 14], [5, 6, 7, 0], [9, 10, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert input_ids.dtype == mask.dtype == np.int64


def test_fit_batches_splits_only_what_is_over_budget_and_trims_padding():
    lengths = np.array([6, 2, 5, 1, 3, 4])
    ids = [[1] * n for n in lengths]
    batches = [Batch(p, *pad_rows(ids, lengths, p, 0)) for p in plan_batches(lengths, 24, 64)]
    assert fit_batches(batches, 24) == batches  # planned with this budget: untouched
    fitted = fit_batches(batches, 12)
    assert [b.positions.tolist() for b in fitted] == [[0, 2], [5, 4], [1, 3]]
    assert [b.input_ids.shape for b in fitted] == [(2, 6), (2, 4), (2, 2)]  # each trimmed to its longest
    assert all(padded_size(b) <= 12 for b in fitted)
    assert all((b.attention_mask.sum(1) == lengths[b.positions]).all() for b in fitted)


# -- out of memory -------------------------------------------------------------------------------


class OomOnceEncoder(HashEncoder):
    """The test hook: the first batch of more than `rows` texts fails as a CUDA OOM would."""

    def __init__(self, rows: int) -> None:
        super().__init__(64)
        self.rows, self.raised, self.budgets = rows, 0, []

    def describe(self):
        record = super().describe()
        record.name = HASH_MODEL
        return record

    def run(self, window):
        self.budgets.append(self.batch_tokens)
        if not self.raised and any(len(b.positions) > self.rows for b in window.batches):
            self.raised += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run(window)


def test_out_of_memory_halves_the_budget_retries_and_gives_the_same_store(tmp_path):
    path = str(corpus(tmp_path, 300))
    encode_corpus([path], tmp_path / "plain", EncodeOptions(model=HASH_MODEL, shard_size=50))
    flaky, said = OomOnceEncoder(rows=8), Messages()
    encode_corpus(
        [path], tmp_path / "oom", EncodeOptions(model=HASH_MODEL, shard_size=50), encoder=flaky, reporter=said
    )
    assert flaky.raised == 1
    assert flaky.budgets[0] == 256 and flaky.budgets[-1] < 256  # later windows: the smaller budget
    assert [line for line in said.lines if "out of memory" in line] == [said.lines[0]]  # said once
    assert "halved" in said.lines[0]
    same_store(tmp_path / "plain", tmp_path / "oom")


def test_out_of_memory_on_one_text_is_an_error():
    class AlwaysOom(HashEncoder):
        def run(self, window):
            raise MemoryError

    with pytest.raises(MemoryError, match="single text"):
        AlwaysOom(16).encode(["one text", "and another"])


def test_other_errors_are_not_retried():
    class Broken(HashEncoder):
        def run(self, window):
            self.calls += 1
            raise RuntimeError("CUDA error: device-side assert triggered")

    broken = Broken(16)
    with pytest.raises(RuntimeError, match="device-side assert"):
        broken.encode(["a b c"] * 20)
    assert broken.calls == 1


def test_out_of_memory_recognized():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError and torch.cuda's, by name
        pass

    assert is_out_of_memory(OutOfMemoryError("Tried to allocate 2.00 GiB"))


def test_real_model_out_of_memory_retry_gives_the_same_vectors(encoder, sample_texts, monkeypatch):
    texts = sample_texts[:16]
    expected = encoder.encode(texts)
    original, budget, raised = encoder.hidden_states, encoder.batch_tokens, []

    def oom_once(input_ids, attention_mask):
        if not raised and input_ids.shape[0] > 4:
            raised.append(tuple(input_ids.shape))
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory (test hook)")
        return original(input_ids, attention_mask)

    monkeypatch.setattr(encoder, "hidden_states", oom_once)
    try:
        got = encoder.encode(texts)
    finally:
        encoder.batch_tokens = budget  # the session's shared encoder
    assert raised
    assert np.allclose(got, expected, atol=1e-5)  # same rows; smaller batches round differently


# -- the result sink (the GPU loop's host side, run on the CPU) ---------------------------------


def test_result_sink_collects_batches_late_and_in_place():
    import torch

    out = np.zeros((6, 2), dtype=np.float32)
    sink = ResultSink(out, "cpu", lag=2)
    batches = [np.array([4, 1]), np.array([0]), np.array([5, 2]), np.array([3])]
    for positions in batches:
        sink.put(positions, torch.tensor([[float(p), -float(p)] for p in positions], dtype=torch.bfloat16))
        assert len(sink.pending) <= 2  # at most `lag` batches in flight
    assert len(sink.pending) == 2 and not out[5].any()  # the last two are not collected yet
    assert sink.finish() is out and not sink.pending
    assert out.tolist() == [[p, -p] for p in range(6)]


# -- stage timings -------------------------------------------------------------------------------


def test_summary_times_every_stage_and_names_the_bound(tmp_path):
    from sbert_cli.cli.progress import stage_text

    summary = encode_corpus([str(corpus(tmp_path, 100))], tmp_path / "s", EncodeOptions(model=HASH_MODEL, workers=2))
    assert set(summary.stages) == {"read", "tokenize", "model", "write"}
    text = stage_text(summary.stages, summary.tokens)
    assert "tok/s" in text and "bound by" in text
