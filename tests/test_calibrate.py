"""`--dtype auto` / `--backend auto`: the engine chosen by measurement (encoding/calibrate.py,
encoding/timing.py), its cache, and what a cold measurement costs. Fake engines on a fake clock:
no timing of this machine is asserted; one slow test runs the real model."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
from fakes import HASH_MODEL, Messages

from sbert_cli.encoding import calibrate, timing
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.encoding.windows import Batch, PreparedWindow
from sbert_cli.store.store import Store

WORDS = "the cat sat on a mat while seven quiet dogs watched every passing cloud drift east".split()


# -- --dtype auto: calibration ------------------------------------------------------------------


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """A CPU that has native bf16, with an empty calibration cache of its own."""
    monkeypatch.setenv("SBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sbert_cli.encoding.devices.cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.devices.cpu_bf16_flags", lambda: ["avx512_bf16"])


def fake_calibration(calls: list, dtype: str, backend: str = "torch"):
    def measure(settings, texts, threads, batch_tokens, total=None):
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
    assert len(said) == 1 and said[0].startswith("engine: torch bf16 (") and "torch fp32 1.25x" in said[0]
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


def test_explicit_dtype_and_backend_or_other_devices_never_calibrate(bf16_cpu):
    both = calibrate.ModelSettings(dtype="fp32", backend="torch", device="cpu")
    assert calibrate.auto_engine(both, 10**6, lambda n: [], print) == calibrate.Engine("torch", "fp32")
    assert not calibrate.calibrates(both)
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
    assert any(line.startswith(f"engine: {record.backend} {chosen} (") for line in said.lines)
    monkeypatch.setattr(calibrate, "calibrate", lambda *a: pytest.fail("calibrated twice"))
    encode_corpus([str(path)], tmp_path / "b", EncodeOptions(device="cpu", dtype="auto"))
    again = Store.open(tmp_path / "b").manifest.model
    assert (again.dtype, again.backend) == (chosen, record.backend)
    other = tmp_path / "more.txt"
    other.write_text("One more line.\n")
    encode_corpus([str(other)], tmp_path / "a", EncodeOptions(device="cpu", dtype="auto"))
    assert Store.open(tmp_path / "a").manifest.model.dtype == chosen  # an append keeps the store's dtype


# -- a cold measurement: bounded, stopped early, losers freed ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """An engine whose model takes `rate` seconds a token on the test's clock; one batch a text."""

    def __init__(self, engine: tuple[str, str], rate: float, clock: Clock, runs: list) -> None:
        self.engine, self.rate, self.clock, self.runs = engine, rate, clock, runs
        self.batch_tokens = 2048

    def prepare(self, texts):
        sizes = [len(t.split()) for t in texts]
        batches = [Batch(np.array([i]), np.ones((1, n)), np.ones((1, n), dtype=np.int64)) for i, n in enumerate(sizes)]
        return PreparedWindow(None, len(texts), batches, tokens=sum(sizes), truncated=0)

    def run(self, window):
        self.clock.now += self.rate * sum(int(b.attention_mask.sum()) for b in window.batches)
        self.runs.append((self.engine, len(window.batches)))


@pytest.fixture
def engines(bf16_cpu, monkeypatch):
    """Four fake engines (OpenVINO bf16 fastest), loading in 10 clock seconds each; returns
    (rates to set, the runs each made, what is loaded now, the most loaded at once)."""
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.runs_bf16", lambda: True)
    clock, runs, loaded, peak = Clock(), [], {}, [0]
    rates = {("openvino", "bf16"): 1.0, ("openvino", "fp32"): 1.6, ("torch", "bf16"): 1.5, ("torch", "fp32"): 2.0}
    fake_time = types.SimpleNamespace(perf_counter=clock, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(calibrate, "time", fake_time)
    monkeypatch.setattr(timing, "time", fake_time)

    def load(settings):
        engine = (settings.backend, settings.dtype)
        if engine not in loaded:
            clock.now += 10
            loaded[engine] = FakeEngine(engine, rates[engine], clock, runs)
            peak[0] = max(peak[0], len(loaded))
        return loaded[engine]

    monkeypatch.setattr("sbert_cli.encoding.loader.load_encoder", load)
    monkeypatch.setattr("sbert_cli.encoding.loader.unload_encoder", lambda s: loaded.pop((s.backend, s.dtype)))
    return rates, runs, loaded, peak


SAMPLE = [" ".join(WORDS[: 5 + i % 10]) for i in range(32)]  # 32 texts, 5-14 words: 300 tokens


def test_a_big_job_measures_every_engine_stops_the_slow_ones_and_keeps_only_the_winner(engines):
    rates, runs, loaded, peak = engines
    result = calibrate.calibrate(calibrate.ModelSettings(device="cpu"), SAMPLE, None, 2048, total=10**7)
    assert (result.backend, result.dtype) == ("openvino", "bf16") and result.complete
    assert set(result.seconds) == {"openvino bf16", "openvino fp32", "torch bf16", "torch fp32"}
    timed = {e: sum(n for r, n in runs if r == e) for e in rates}  # batches run, warm-ups included
    assert timed[("openvino", "bf16")] == 4 + 32  # the first: warmed up and timed in full
    assert timed[("torch", "fp32")] < 4 + 32  # twice as slow: stopped once it could not win
    assert result.seconds["torch fp32"] == pytest.approx(2 * result.seconds["openvino bf16"], rel=0.05)
    assert list(loaded) == [("openvino", "bf16")] and peak[0] == 2  # the best and one challenger at most


def test_a_small_job_measures_only_what_it_can_afford(engines):
    result = calibrate.calibrate(calibrate.ModelSettings(device="cpu"), SAMPLE, None, 2048, total=2100)
    # The likeliest fastest, and the first fp32 engine (bf16 must beat one), stopped once it lost.
    assert list(result.seconds) == ["openvino bf16", "openvino fp32"] and not result.complete
    said = calibrate.describe(result, 4)
    assert said.startswith("engine: openvino bf16 (") and "2 of 4 engines" in said


def test_bf16_is_never_chosen_without_an_fp32_engine_to_beat(engines):
    rates, _, _, _ = engines
    rates[("torch", "bf16")] = 2.5  # bf16 slower than fp32 (an AVX512-BF16 Xeon without AMX, torch)
    settings = calibrate.ModelSettings(device="cpu", backend="torch")
    result = calibrate.calibrate(settings, SAMPLE, None, 2048, total=2100)
    assert (result.backend, result.dtype) == ("torch", "fp32") and result.complete


def test_close_engines_are_timed_twice(engines):
    rates, runs, _, _ = engines
    rates[("openvino", "fp32")] = 0.95  # fp32 within 10% of bf16: both again, fp32 wins (bf16 must gain 3%)
    result = calibrate.calibrate(calibrate.ModelSettings(device="cpu"), SAMPLE, None, 2048, total=10**7)
    assert (result.backend, result.dtype) == ("openvino", "fp32")
    assert sum(n for r, n in runs if r == ("openvino", "bf16")) == 4 + 32 + 32


def test_explicit_fp32_chooses_between_the_fp32_engines(engines):
    settings = calibrate.ModelSettings(device="cpu", dtype="fp32")
    assert calibrate.calibrates(settings)
    assert calibrate.candidates(settings) == [("torch", "fp32"), ("openvino", "fp32")]
    result = calibrate.calibrate(settings, SAMPLE, None, 2048, total=10**7)
    assert (result.backend, result.dtype) == ("openvino", "fp32") and set(result.seconds) == {
        "openvino fp32",
        "torch fp32",
    }


def test_engine_order_puts_the_likeliest_fastest_first():
    engines = [("torch", "fp32"), ("openvino", "fp32"), ("torch", "bf16"), ("openvino", "bf16")]
    assert timing.engine_order(engines) == [
        ("openvino", "bf16"),
        ("openvino", "fp32"),
        ("torch", "bf16"),
        ("torch", "fp32"),
    ]


def test_a_partial_result_decides_jobs_its_size_and_a_bigger_job_measures_again():
    engines = [("torch", "fp32"), ("openvino", "bf16")]
    partial = {
        "backend": "openvino",
        "dtype": "bf16",
        "seconds": {"openvino bf16": 0.35},
        "texts": 32,
        "complete": False,
        "cost_s": 1.0,
    }
    assert calibrate.usable(partial, 2100, engines)  # ~23 s of work: measuring more would not pay
    assert not calibrate.usable(partial, 100_000, engines)  # ~18 min: it pays to measure the rest
    assert calibrate.usable({**partial, "complete": True}, 100_000, engines)
    assert not calibrate.usable({**partial, "backend": "torch", "dtype": "bf16"}, 2100, engines)  # gone
    assert not calibrate.usable({"backend": "openvino"}, 2100, engines)  # a damaged entry: measure again
    assert not calibrate.usable(None, 2100, engines)


def test_a_small_job_takes_the_fastest_measured_engine_of_its_dtype(bf16_cpu, monkeypatch):
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.available", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.runs_bf16", lambda: True)
    monkeypatch.setattr("sbert_cli.encoding.openvino_backend.version", lambda: "")
    settings = calibrate.ModelSettings(device="cpu")
    small = calibrate.auto_engine(settings, 500, lambda n: pytest.fail("a small job measures nothing"), print)
    assert small == calibrate.Engine("torch", "fp32")  # nothing measured yet: torch fp32
    seconds = {"openvino bf16": 0.5, "openvino fp32": 0.8, "torch fp32": 1.3}
    measured = calibrate.Calibration("openvino", "bf16", seconds, 0.01, 1, 16, 1400, "now")
    calibrate._remember(calibrate.cache_key(settings, None, 2048), measured)
    # fp32 (exact vectors) for small work, on the fastest fp32 engine measured: OpenVINO.
    assert calibrate.auto_engine(settings, 500, lambda n: [], print) == calibrate.Engine("openvino", "fp32", 1)


@pytest.mark.parametrize(("installed", "expected"), [(True, "openvino"), (False, "auto")])
def test_appending_encodes_on_the_engine_the_store_records(sample_store, monkeypatch, installed, expected):
    """A store made on OpenVINO bf16 (measured fastest) takes appends on OpenVINO bf16, not torch,
    where this machine has OpenVINO; an explicit --backend still wins."""
    from dataclasses import replace

    from sbert_cli.encoding import openvino_backend
    from sbert_cli.encoding.runner import EncodeOptions, _inherit_settings
    from sbert_cli.store.store import Store

    monkeypatch.setattr(openvino_backend, "available", lambda: installed)
    store = Store.open(sample_store)
    store.manifest.model = replace(store.model, backend="openvino", dtype="bf16")
    options = _inherit_settings(EncodeOptions(device="cpu"), store)
    assert (options.backend, options.dtype) == (expected, "bf16")
    assert _inherit_settings(EncodeOptions(device="cpu", backend="torch"), store).backend == "torch"


# -- a verdict measured on a busy machine ----------------------------------------------------------
def test_machine_seconds_count_busy_time_and_steal_from_proc_stat(tmp_path, monkeypatch):
    from sbert_cli.encoding import contention

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        "cpu  201 12 53 2004 25 11 12 38 0 0\n"
        "cpu0 100 10 50 1000 20 5 5 30 0 0\n"
        "cpu1 101 2 3 1004 5 6 7 8 0 0\n"
        "intr 12345\n",
        encoding="ascii",
    )
    monkeypatch.setattr(contention, "PROC_STAT", stat)
    tick = contention.os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(contention.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert contention.machine_seconds() == pytest.approx(200 / tick)  # cpu0's busy and steal, not idle/iowait
    monkeypatch.setattr(contention.os, "sched_getaffinity", lambda pid: {0, 1})
    assert contention.machine_seconds() == pytest.approx((200 + 127) / tick)
    monkeypatch.setattr(contention.os, "sched_getaffinity", lambda pid: {7})  # no such line: the total
    assert contention.machine_seconds() == pytest.approx((201 + 12 + 53 + 11 + 12 + 38) / tick)
    monkeypatch.setattr(contention, "PROC_STAT", tmp_path / "missing")
    assert contention.machine_seconds() is None


def test_others_are_the_machines_busy_time_less_this_process(monkeypatch):
    from sbert_cli.encoding import contention

    machine, own, wall = iter([10.0, 14.0]), iter([2.0, 5.0, 5.0, 6.0]), iter([100.0, 102.0, 102.0, 103.0])
    monkeypatch.setattr(contention, "machine_seconds", lambda: next(machine))
    monkeypatch.setattr(contention, "own_seconds", lambda: next(own))
    monkeypatch.setattr(contention, "time", types.SimpleNamespace(perf_counter=lambda: next(wall)))
    with contention.Others() as others:
        pass
    assert others.cores == pytest.approx(0.5)  # 4 s busy, 3 of them ours, over 2 s
    monkeypatch.setattr(contention, "machine_seconds", lambda: None)
    with contention.Others() as unknown:
        pass
    assert unknown.cores is None


@pytest.mark.parametrize(
    ("recorded", "now", "measured_again"),
    [
        (1.2, 0.0, True),  # measured while others ran, quiet now: measured again
        (1.2, 1.5, False),  # still busy: the verdict stands
        (None, 0.0, True),  # measured before sbert recorded it: measured again once quiet
        (0.1, 0.0, False),  # measured on a quiet machine: kept
    ],
)
def test_a_verdict_measured_while_others_ran_is_measured_again_once_quiet(
    bf16_cpu, monkeypatch, recorded, now, measured_again
):
    calls, said = [], []
    monkeypatch.setattr(calibrate, "calibrate", fake_calibration(calls, "bf16"))
    monkeypatch.setattr("sbert_cli.encoding.contention.others_now", lambda: now)
    settings = calibrate.ModelSettings(device="cpu")
    texts = [f"text {i}" for i in range(600)]
    calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], said.append)
    entry = calibrate.cache_file()
    data = calibrate.json.loads(entry.read_text())
    for verdict in data.values():
        verdict.pop("others_cores")
        if recorded is not None:
            verdict["others_cores"] = recorded
    entry.write_text(calibrate.json.dumps(data))
    calibrate.auto_engine(settings, 10_000, lambda n: texts[:n], said.append)
    assert len(calls) == (2 if measured_again else 1)


def test_the_line_says_when_others_took_the_cpus():
    result = calibrate.Calibration("torch", "bf16", {"torch bf16": 0.8, "torch fp32": 1.0}, 0.01, 1, 16, 100, "now")
    assert "other processes" not in calibrate.describe(result)
    busy = calibrate.describe(calibrate.replace(result, others_cores=1.3))
    assert "; other processes took 1.3 cores meanwhile: measured again when it is quiet" in busy
