"""`--dtype auto` and `--backend auto` on the CPU: the engine decided by measurement, cached per
model, machine, threads and library versions.

A CPU flag (AVX512-BF16, AMX) says bf16 runs in hardware, not that it is faster: on an Intel
Xeon with AVX512-BF16 and no AMX bf16 was slower than fp32 (400 paragraphs: fp32 ~13 s, bf16
~15.5 s), on this project's AMD EPYC (AVX512-BF16) faster; and which runtime is fastest differs
by CPU too (see benchmarks/README.md). So for a new store the encode runner times the candidate
engines, (backend, dtype) pairs, on the run's own first texts and keeps the fastest, and records
the dtype and backend it used in the store (appending keeps the dtype).

- Candidates: torch and, when installed, OpenVINO (the `openvino` extra), each in fp32 and, on
  CPUs with native bf16, bf16. `--backend torch|openvino` keeps the measurement to that backend,
  `--dtype fp32|bf16` to that dtype (`--dtype fp32`: torch or OpenVINO, both at parity).
- Small jobs (`SMALL_JOB_TEXTS` or fewer) measure nothing (it costs more than it can save) and
  run in the dtype asked, fp32 for auto (small interactive work keeps exact parity): on the
  fastest engine of that dtype an earlier measurement found, else torch.
- Measuring is cheap and bounded (encoding/timing.py): engines are loaded one at a time, the
  likeliest fastest first; one that cannot win stops after a batch; the losers are freed (RSS
  stays the winner's); and a job measures no more engines than CALIBRATION_SHARE of its
  estimated time pays for. Such a partial result is cached too, and a bigger job measures on.
- bf16 must beat the fastest fp32 engine by `BF16_MIN_GAIN`: within that, fp32's exact vectors
  are worth more, and `auto` stays within 5% of the fastest engine either way.
- Tokenizing the sample is timed too, and the run's default `--workers` follows from it
  (`choose_workers`): a second tokenizer thread only where tokenizing would bound the run.
- The result is cached (`calibration.json` in sbert's user cache folder, ~/.cache/sbert or
  SBERT_CACHE: per user, not per store), keyed by the model's fingerprint, the CPU and its bf16
  flags, the threads, the batch budget, the backend and dtype asked, and the torch, transformers
  and OpenVINO versions, so it is measured once per machine and model, not once per run.
- Unless other processes took the CPUs while it was measured (`others_cores`, encoding/
  contention.py): such a verdict compares them, not the engines, so the next job that can
  afford a measurement measures again once the machine is quiet (a verdict cached before this
  was recorded too); on a machine that stays busy the verdict stands.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sbert_cli.encoding import contention
from sbert_cli.encoding.settings import ModelSettings
from sbert_cli.encoding.timing import BF16_MIN_GAIN, Measure, choose_dtype, choose_engine, engine_order

__all__ = ["BF16_MIN_GAIN", "choose_dtype", "choose_engine"]  # re-exported: the rules `auto` follows

if TYPE_CHECKING:
    from sbert_cli.encoding.plan import PlannedInput
    from sbert_cli.inputs.reader import ReadOptions

CACHE_VERSION = 3
SMALL_JOB_TEXTS = 2048  # one window: the job is over before a calibration would pay for itself
SAMPLE_FROM = 512  # the calibration texts are spread over the run's first texts, so that a few
SAMPLE_TEXTS = 16  # short headings at the top of a file do not stand for the whole corpus
# 16 book paragraphs (~1,400 tokens, one CPU batch) take ~0.4 CPU s in OpenVINO bf16 on the 2-core
# AMD EPYC. A cold `auto` on 2,100 Moby-Dick paragraphs at load 8-9 (CPU s over the fixed OpenVINO
# bf16 run's start-up): 3.2 with 32 texts and a gc after each engine, ~1.5 with 16 and one gc.
CALIBRATION_SHARE = 0.03  # measuring stops before it costs more than this share of the job's time
TOKENIZE_SHARE = 0.5  # a second tokenizer worker once tokenizing takes half the model's time
DEFAULT_ENGINE = ("torch", "fp32")


@dataclass
class Calibration:
    backend: str  # the engine `auto` runs as
    dtype: str
    seconds: dict[str, float]  # "backend dtype" -> the faster of two timings of the sample
    tokenize_s: float  # tokenizing and padding the sample, one worker
    workers: int  # the run's default --workers
    texts: int
    tokens: int
    measured: str  # when (UTC)
    complete: bool = True  # every candidate measured (else the job could not afford them all)
    cost_s: float = 0.0  # what measuring took, loads included
    others_cores: float = 0.0  # the cores other processes took meanwhile (encoding/contention.py)


@dataclass(frozen=True)
class Engine:
    """What an encode run uses: backend, dtype and (None: the feeder's default) workers."""

    backend: str
    dtype: str
    workers: int | None = None


def cache_file() -> Path:
    from sbert_cli.encoding import onnx_backend

    return onnx_backend.cache_dir().parent / "calibration.json"


def library_versions() -> str:
    """The versions of the libraries whose kernels are timed."""
    from importlib.metadata import version

    from sbert_cli.encoding import openvino_backend

    return (
        f"torch {version('torch')}|transformers {version('transformers')}|openvino {openvino_backend.version() or '-'}"
    )


def cache_key(settings: ModelSettings, threads: int | None, batch_tokens: int) -> str:
    """Model, machine, threads and library versions: what the engines' speed ratios depend on."""
    import torch

    from sbert_cli.encoding.devices import cpu_bf16_flags, cpu_name
    from sbert_cli.encoding.loader import describe_model

    fingerprint = describe_model(replace(settings, dtype="fp32", backend="torch")).fingerprint
    cores = f"{os.cpu_count()} cores, {threads or torch.get_num_threads()} threads"
    return (
        f"v{CACHE_VERSION}|{fingerprint}|{cpu_name()}|{'+'.join(cpu_bf16_flags())}|{cores}|"
        f"{batch_tokens} tokens|backend {settings.backend}|dtype {settings.dtype}|{library_versions()}"
    )


def read_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, result: Calibration) -> None:
    from sbert_cli.store.atomic import write_atomic

    data = read_cache()
    data[key] = asdict(result)
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
    except OSError:  # a read-only cache folder costs a calibration per run, not the run
        pass


def candidates(settings: ModelSettings) -> list[tuple[str, str]]:
    """The (backend, dtype) engines `auto` chooses between on this CPU, fp32 first; a dtype the
    user gave keeps the choice to that dtype's engines (`--dtype fp32`: torch or OpenVINO)."""
    from sbert_cli.encoding import openvino_backend
    from sbert_cli.encoding.devices import cpu_has_native_bf16

    backends = ["torch"] if settings.backend in ("auto", "torch") else []
    if settings.backend in ("auto", "openvino") and openvino_backend.available():
        backends.append("openvino")
    bf16 = cpu_has_native_bf16()
    found = [(b, "fp32") for b in backends]
    found += [(b, "bf16") for b in backends if bf16 and (b == "torch" or openvino_backend.runs_bf16())]
    return found if settings.dtype == "auto" else [e for e in found if e[1] == settings.dtype]


def calibrates(settings: ModelSettings) -> bool:
    """Whether the engine is decided by measurement here: the CPU, `--dtype auto` or `--backend
    auto` with a dtype both torch and OpenVINO run, and more than one engine to choose from."""
    from sbert_cli.encoding.devices import resolve_device
    from sbert_cli.encoding.loader import _factory_for

    if settings.dtype not in ("auto", "fp32", "bf16") or settings.backend not in ("auto", "torch", "openvino"):
        return False
    if settings.dtype != "auto" and settings.backend != "auto":
        return False
    if _factory_for(settings) is not None or resolve_device(settings.device) != "cpu":
        return False
    return len(candidates(settings)) > 1


def usable(cached: object, total: int | None, engines: list[tuple[str, str]]) -> bool:
    """Whether a cached result decides this job: its engine is still a candidate, and it measured
    every engine, or as many as this job could afford (a bigger job measures again, further)."""
    try:
        engine = (cached["backend"], cached["dtype"])
        if engine not in engines:
            return False
        if cached.get("complete", True) or total is None:
            return True
        job_s = cached["seconds"][f"{engine[0]} {engine[1]}"] * total / cached["texts"]
        return CALIBRATION_SHARE * job_s < cached["cost_s"] * (1 + 1 / len(cached["seconds"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return False


def auto_engine(
    settings: ModelSettings,
    total: int | None,
    sample: Callable[[int], list[str]],
    say: Callable[[str], None],
    threads: int | None = None,
    batch_tokens: int | None = None,
) -> Engine:
    """The engine a new store's run uses (the settings' own unless it calibrates).

    `total`: the texts the job will encode (None when unknown, e.g. stdin); `sample(n)`: up to
    the run's first n texts. Says one line when it measured.
    """
    from sbert_cli.encoding.devices import DEFAULT_CPU_BATCH_TOKENS

    if not calibrates(settings):
        return Engine(settings.backend, settings.dtype)
    fallback = Engine(
        DEFAULT_ENGINE[0] if settings.backend == "auto" else settings.backend,
        "fp32" if settings.dtype == "auto" else settings.dtype,
    )
    budget = batch_tokens or DEFAULT_CPU_BATCH_TOKENS
    key = cache_key(settings, threads, budget)
    cached = read_cache().get(key)
    if total is not None and total <= SMALL_JOB_TEXTS:
        return fastest_measured(cached, fallback, candidates(settings))
    if usable(cached, total, candidates(settings)) and not measure_again(cached):
        return Engine(cached["backend"], cached["dtype"], int(cached.get("workers") or 1))
    texts = sample(SAMPLE_FROM)
    if len(texts) < SAMPLE_TEXTS:  # stdin only, or too little to measure: the exact engine
        return fallback
    result = calibrate(settings, spread(texts, SAMPLE_TEXTS), threads, budget, total)
    _remember(key, result)
    say(describe(result, len(candidates(settings))))
    return Engine(result.backend, result.dtype, result.workers)


def measure_again(cached: dict) -> bool:
    """Whether a verdict measured while other processes took the CPUs (or before sbert recorded
    that) is measured again: yes once the machine is quiet; on a machine that stays busy it stands,
    as a new measurement would be as doubtful."""
    others = cached.get("others_cores")
    if isinstance(others, (int, float)) and others <= contention.CONTENDED_CORES:
        return False
    now = contention.others_now()
    return now is not None and now <= contention.CONTENDED_CORES


def fastest_measured(cached: object, fallback: Engine, engines: list[tuple[str, str]]) -> Engine:
    """A small job's engine: the fastest one a cached result measured in the small job's dtype
    (fp32 for auto: its exact vectors), else `fallback`. Nothing is measured for it."""
    try:
        seconds = {tuple(name.split()): s for name, s in cached["seconds"].items()}
        found = min((s, e) for e, s in seconds.items() if e[1] == fallback.dtype and e in engines)[1]
        return Engine(found[0], found[1], int(cached.get("workers") or 1))
    except (KeyError, TypeError, AttributeError, ValueError):
        return fallback


def describe(result: Calibration, engines: int | None = None) -> str:
    """One line: what was chosen and every engine's time, relative to the chosen one."""
    best = result.seconds[f"{result.backend} {result.dtype}"]
    times = ", ".join(f"{name} {s / best:.2f}x" for name, s in sorted(result.seconds.items(), key=lambda kv: kv[1]))
    share = result.tokenize_s / best if best else 0.0
    partial = (
        ""
        if result.complete
        else f"; {len(result.seconds)} of {engines or '?'} engines, what a job this size affords, a bigger job measures on"
    )
    if result.others_cores > contention.CONTENDED_CORES:
        partial += f"; other processes took {result.others_cores:.1f} cores meanwhile: measured again when it is quiet"
    return (
        f"engine: {result.backend} {result.dtype} (time on {result.texts} of this run's texts, relative "
        f"to it: {times}; tokenizing {share:.0%} of its time: {result.workers} worker"
        f"{'s' if result.workers > 1 else ''}; measured in {result.cost_s:.1f} s{partial}; kept in {cache_file()})"
    )


def spread(texts: list[str], n: int) -> list[str]:
    """`n` texts evenly spaced over `texts` (all of them when there are fewer)."""
    if len(texts) <= n:
        return list(texts)
    return [texts[i * len(texts) // n] for i in range(n)]


def _prepare(encoder, texts: list[str], batch_tokens: int):
    """`encoder.prepare` with the run's batch budget (the encoder is shared: its own is put back)."""
    saved, encoder.batch_tokens = encoder.batch_tokens, batch_tokens
    try:
        return encoder.prepare(texts)
    finally:
        encoder.batch_tokens = saved


def choose_workers(tokenize_s: float, model_s: float, cores: int) -> int:
    """One tokenizer worker unless tokenizing takes TOKENIZE_SHARE of the model's time: a second
    one then keeps the model fed, at the price of competing with it for cores."""
    if cores < 2 or tokenize_s < TOKENIZE_SHARE * model_s:
        return 1
    return 2


def affordable(
    seconds: dict[tuple[str, str], float], engine: tuple[str, str], spent: float, scale: float | None
) -> bool:
    """Whether measuring `engine` next is worth it: the first always; the first fp32 one always
    (bf16 must beat fp32 to be chosen: on some CPUs it is slower); any other only while the
    measuring, one engine more, stays within CALIBRATION_SHARE of the job's estimated time (the
    best sample time x `scale`, the job's texts over the sample's; None: unknown, measure all)."""
    if not seconds or scale is None or (engine[1] == "fp32" and all(e[1] != "fp32" for e in seconds)):
        return True
    return spent * (1 + 1 / len(seconds)) <= CALIBRATION_SHARE * min(seconds.values()) * scale


def calibrate(
    settings: ModelSettings, texts: list[str], threads: int | None, batch_tokens: int, total: int | None = None
) -> Calibration:
    """Time the candidate engines on `texts`, likeliest fastest first, and pick one.

    Only the model is timed (every engine tokenizes alike; tokenizing is timed once, apart); each
    engine first runs a few texts, so one-time kernel setup is not counted. With `total` (the
    texts the job encodes) the measuring stops before it would cost more than CALIBRATION_SHARE
    of the job's estimated time: the result is then partial, and a bigger job completes it.
    """
    from sbert_cli.encoding.encoder import torch_threads

    engines = engine_order(candidates(settings))
    run = Measure(settings, batch_tokens)
    started = time.perf_counter()
    with torch_threads(threads), contention.Others() as others:
        first = run.load(engines[0])
        tokenizing = time.perf_counter()
        prepared = _prepare(first, texts, batch_tokens)
        tokenize_s = time.perf_counter() - tokenizing
        for engine in engines:
            if affordable(run.seconds, engine, time.perf_counter() - started, total and total / len(texts)):
                run.measure(engine, prepared, lambda encoder: _prepare(encoder, texts[:4], batch_tokens))
        run.finish()
    backend, dtype = run.winner
    return Calibration(
        backend,
        dtype,
        {f"{b} {d}": s for (b, d), s in run.seconds.items()},
        tokenize_s,
        choose_workers(tokenize_s, run.seconds[run.winner], os.cpu_count() or 1),
        len(texts),
        prepared.tokens,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        complete=len(run.seconds) == len(engines),
        cost_s=time.perf_counter() - started,
        others_cores=round(others.cores or 0.0, 2),  # None: not to be told here, so not doubted
    )


def first_texts(plan: list[PlannedInput], read: ReadOptions, n: int) -> list[str]:
    """Up to the first `n` texts of the run's file inputs (stdin is read once, by the run)."""
    from sbert_cli.inputs.reader import ReadStats, read_records

    texts: list[str] = []
    for item in plan:
        if item.source.is_stdin:
            continue
        records = read_records(item.source, read, ReadStats())
        try:
            for record in records:
                texts.append(record.text)
                if len(texts) >= n:
                    return texts
        finally:
            records.close()
    return texts


class RunOptions(Protocol):
    """What `engine_for_run` reads and sets of an encode run's options (runner.EncodeOptions)."""

    dtype: str
    backend: str
    workers: int | None
    threads: int | None
    batch_tokens: int | None
    read: ReadOptions

    def model_settings(self) -> ModelSettings: ...


def engine_for_run(options: RunOptions, plan: list[PlannedInput], total: int, say: Callable[[str], None]) -> Engine:
    """`auto_engine` for an encode run (its size, unknown with stdin, and its first texts); sets
    the run's dtype, backend and, unless given, workers to the engine's."""
    known = None if any(item.source.is_stdin for item in plan) else total
    engine = auto_engine(
        options.model_settings(),
        known,
        lambda n: first_texts(plan, options.read, n),
        say,
        options.threads,
        options.batch_tokens,
    )
    options.dtype, options.backend = engine.dtype, engine.backend
    options.workers = options.workers or engine.workers
    return engine
