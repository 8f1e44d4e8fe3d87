"""The encode engine: parallel feeding, the out-of-memory retry, the result sink a GPU uses, and
`--dtype auto`'s calibration cache. Plumbing runs on the hash model; the few real-model tests
use the session's shared fp32 load. No timing is asserted anywhere."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL, HashEncoder
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding import calibrate
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


class Messages:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def progress(self, update) -> None:
        pass


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


# -- --dtype auto: calibration ------------------------------------------------------------------


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """A CPU that has native bf16, with an empty calibration cache of its own."""
    monkeypatch.setenv("SBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sbert_cli.encoding.devices.cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.devices.cpu_bf16_flags", lambda: ["avx512_bf16"])


def fake_calibration(calls: list, dtype: str, backend: str = "torch"):
    def measure(settings, texts, threads, batch_tokens):
        calls.append(len(texts))
        seconds = {"torch fp32": 1.0, f"{backend} {dtype}": 0.8}
        return calibrate.Calibration(backend, dtype, seconds, 0.01, 1, len(texts), 100, "now")

    return measure


def test_auto_is_fp32_for_small_jobs_without_measuring(bf16_cpu, monkeypatch):
    calls: list = []
    monkeypatch.setattr(calibrate, "calibrate", fake_calibration(calls, "bf16"))
    settings = calibrate.ModelSettings(device="cpu")
    assert calibrate.auto_engine(settings, 500, lambda n: ["text"] * n, print) == calibrate.Engine("torch", "fp32")
    assert calibrate.auto_engine(settings, None, lambda n: [], print).dtype == "fp32"  # stdin only: nothing to time
    assert calls == []


def test_auto_calibrates_once_then_uses_the_cache(bf16_cpu, monkeypatch):
    calls, said = [], []
    monkeypatch.setattr(calibrate, "calibrate", fake_calibration(calls, "bf16"))
    settings = calibrate.ModelSettings(device="cpu")
    texts = [f"text {i}" for i in range(600)]
    chosen = calibrate.Engine("torch", "bf16", 1)
    assert calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], said.append) == chosen
    assert calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], said.append) == chosen
    assert calls == [calibrate.SAMPLE_TEXTS]  # measured once, on texts spread over the first 512
    assert len(said) == 1 and said[0].startswith("--dtype auto: torch bf16 (") and "torch fp32 1.25x" in said[0]
    assert calibrate.cache_file().is_file()
    # Another thread count is another measurement.
    assert calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], said.append, threads=1) == chosen
    assert len(calls) == 2


def test_cached_engine_that_is_no_longer_a_candidate_is_measured_again(bf16_cpu, monkeypatch):
    """A cache entry naming OpenVINO is not used once OpenVINO is gone: measured again."""
    calls: list = []
    monkeypatch.setattr(calibrate, "calibrate", fake_calibration(calls, "bf16", "openvino"))
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.runs_bf16", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.version", lambda: "")  # same key either way
    settings = calibrate.ModelSettings(device="cpu")
    texts = [f"text {i}" for i in range(600)]
    assert calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], print).backend == "openvino"
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: False)
    monkeypatch.setattr(calibrate, "calibrate", fake_calibration(calls, "bf16"))
    assert calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], print) == calibrate.Engine("torch", "bf16", 1)
    assert len(calls) == 2


def test_candidates_follow_the_backend_and_the_cpu(bf16_cpu, monkeypatch):
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.runs_bf16", lambda: True)
    auto = calibrate.ModelSettings(device="cpu")
    assert calibrate.candidates(auto) == [
        ("torch", "fp32"),
        ("openvino", "fp32"),
        ("torch", "bf16"),
        ("openvino", "bf16"),
    ]
    assert calibrate.candidates(calibrate.ModelSettings(backend="torch")) == [("torch", "fp32"), ("torch", "bf16")]
    monkeypatch.setattr("sbert_cli.encoding.devices.cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: False)
    assert calibrate.candidates(auto) == [("torch", "fp32")]
    assert not calibrate.calibrates(auto)  # one engine: nothing to measure


def test_explicit_dtype_and_other_devices_never_calibrate(bf16_cpu):
    fixed = calibrate.auto_engine(calibrate.ModelSettings(dtype="fp32"), 10**6, lambda n: [], print)
    assert fixed == calibrate.Engine("auto", "fp32")
    hashed = calibrate.auto_engine(calibrate.ModelSettings(model=HASH_MODEL), 10**6, lambda n: [], print)
    assert hashed.dtype == "auto"
    assert not calibrate.calibrates(calibrate.ModelSettings(backend="onnx", device="cpu"))


def test_bf16_must_win_clearly():
    assert calibrate.choose_dtype(1.0, 0.90) == "bf16"
    assert calibrate.choose_dtype(1.0, 0.99) == "fp32"  # within the margin: fp32's exact vectors
    assert calibrate.choose_dtype(1.0, 1.20) == "fp32"


def test_the_fastest_engine_wins_and_bf16_must_beat_the_fastest_fp32():
    seconds = {("torch", "fp32"): 1.0, ("openvino", "fp32"): 0.6, ("torch", "bf16"): 0.59, ("openvino", "bf16"): 0.4}
    assert calibrate.choose_engine(seconds) == ("openvino", "bf16")
    seconds[("openvino", "bf16")] = 0.595  # beats torch fp32 by far, openvino fp32 by too little
    assert calibrate.choose_engine(seconds) == ("openvino", "fp32")
    assert calibrate.choose_engine({("torch", "fp32"): 1.0}) == ("torch", "fp32")


def test_workers_follow_the_tokenizing_share():
    assert calibrate.choose_workers(0.01, 1.0, cores=2) == 1  # tokenizing 1% of the model: one worker
    assert calibrate.choose_workers(0.6, 1.0, cores=2) == 2  # it would bound the run: a second one
    assert calibrate.choose_workers(0.6, 1.0, cores=1) == 1


def test_spread_samples_across_the_first_texts():
    assert calibrate.spread(list(range(512)), 4) == [0, 128, 256, 384]
    assert calibrate.spread([1, 2], 4) == [1, 2]


@pytest.mark.slow
def test_auto_store_records_the_measured_dtype_and_appending_keeps_it(bf16_cpu, encoder, monkeypatch, tmp_path):
    """Real model: a new store's auto runs the calibration (a real one, on 8 texts), records the
    dtype it chose, and the second store reuses the cached result."""
    monkeypatch.setattr(calibrate, "SMALL_JOB_TEXTS", 10)
    monkeypatch.setattr(calibrate, "SAMPLE_TEXTS", 8)
    monkeypatch.setattr("sbert_cli.encoding.loader.unload_encoder", lambda settings: None)  # keep the shared fp32
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"Sentence number {i} is about {WORDS[i % len(WORDS)]}." for i in range(30)))
    said = Messages()
    options = EncodeOptions(device="cpu", dtype="auto")
    encode_corpus([str(path)], tmp_path / "a", options, reporter=said)
    record = Store.open(tmp_path / "a").manifest.model
    chosen = record.dtype
    assert chosen in ("fp32", "bf16") and record.backend in ("torch", "openvino")  # the engine it ran on
    assert any(line.startswith(f"--dtype auto: {record.backend} {chosen} (") for line in said.lines)
    monkeypatch.setattr(calibrate, "calibrate", lambda *a: pytest.fail("calibrated twice"))
    encode_corpus([str(path)], tmp_path / "b", EncodeOptions(device="cpu", dtype="auto"))
    again = Store.open(tmp_path / "b").manifest.model
    assert (again.dtype, again.backend) == (chosen, record.backend)
    other = tmp_path / "more.txt"
    other.write_text("One more line.\n")
    encode_corpus([str(other)], tmp_path / "a", EncodeOptions(device="cpu", dtype="auto"))
    assert Store.open(tmp_path / "a").manifest.model.dtype == chosen  # an append keeps the store's dtype


# -- stage timings -------------------------------------------------------------------------------


def test_summary_times_every_stage_and_names_the_bound(tmp_path):
    from sbert_cli.cli.progress import stage_text

    summary = encode_corpus([str(corpus(tmp_path, 100))], tmp_path / "s", EncodeOptions(model=HASH_MODEL, workers=2))
    assert set(summary.stages) == {"read", "tokenize", "model", "write"}
    text = stage_text(summary.stages, summary.tokens)
    assert "tok/s" in text and "bound by" in text
