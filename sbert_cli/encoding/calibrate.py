"""`--dtype auto` on CPUs with native bf16: decided by measurement, cached per model and machine.

A CPU flag (AVX512-BF16, AMX) says bf16 runs in hardware, not that it is faster: on an Intel
Xeon with AVX512-BF16 and no AMX bf16 was slower than fp32 (400 paragraphs: fp32 ~13 s, bf16
~15.5 s), on this project's AMD EPYC (AVX512-BF16) faster (see benchmarks/README.md). So for a
new store the encode runner times the model in fp32 and in bf16 on the run's own first texts
and keeps the faster, and records the dtype it used in the store (appending keeps it).

- Small jobs (`SMALL_JOB_TEXTS` or fewer) run fp32: calibrating costs more than it can save, and
  small interactive work keeps exact parity with sentence-transformers.
- bf16 must win by `BF16_MIN_GAIN`: within that, fp32's exact vectors are worth more, and `auto`
  stays within 5% of the faster dtype either way.
- The result is cached (`calibration.json` in sbert's cache folder, SBERT_CACHE), keyed by the
  model's fingerprint, the CPU, the threads, the batch budget and the torch version, so it is
  measured once per machine and model, not once per run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sbert_cli.encoding.loader import ModelSettings

if TYPE_CHECKING:
    from sbert_cli.encoding.plan import PlannedInput
    from sbert_cli.encoding.runner import EncodeOptions
    from sbert_cli.inputs.reader import ReadOptions

CACHE_VERSION = 1
SMALL_JOB_TEXTS = 2048  # one window: the job is over before a calibration would pay for itself
SAMPLE_FROM = 512  # the calibration texts are spread over the run's first texts, so that a few
SAMPLE_TEXTS = 32  # short headings at the top of a file do not stand for the whole corpus
# 32 book paragraphs (~1,800 tokens, about one CPU batch) take ~1.3 s in fp32 on the 2-core AMD
# EPYC: with the warm-ups and the second model load the calibration costs ~5 s, once per machine.
ORDER = ("fp32", "bf16", "bf16", "fp32")  # ABBA: load from other processes drifting over the
# calibration weighs on both dtypes alike; each is timed twice and its faster time kept
BF16_MIN_GAIN = 0.97  # bf16 replaces fp32 only when it takes under 97% of fp32's time


@dataclass
class Calibration:
    dtype: str  # the one `auto` runs as
    fp32_s: float  # the faster of two timings of the sample
    bf16_s: float
    texts: int
    tokens: int
    measured: str  # when (UTC)


def cache_file() -> Path:
    from sbert_cli.encoding import onnx_backend

    return onnx_backend.cache_dir().parent / "calibration.json"


def cache_key(settings: ModelSettings, threads: int | None, batch_tokens: int) -> str:
    """Model, machine and library version: what the fp32/bf16 speed ratio depends on."""
    import torch

    from sbert_cli.encoding.devices import cpu_bf16_flags, cpu_name
    from sbert_cli.encoding.loader import describe_model

    fingerprint = describe_model(replace(settings, dtype="fp32")).fingerprint
    cores = f"{os.cpu_count()} cores, {threads or torch.get_num_threads()} threads"
    return (
        f"v{CACHE_VERSION}|{fingerprint}|{cpu_name()}|{'+'.join(cpu_bf16_flags())}|{cores}|"
        f"{batch_tokens} tokens|torch {torch.__version__}"
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


def calibrates(settings: ModelSettings) -> bool:
    """Whether `auto` is decided by measurement here: CPU, torch backend, native bf16."""
    from sbert_cli.encoding.devices import cpu_has_native_bf16, resolve_device
    from sbert_cli.encoding.loader import _factory_for

    if settings.dtype != "auto" or settings.backend == "onnx" or _factory_for(settings) is not None:
        return False
    return resolve_device(settings.device) == "cpu" and cpu_has_native_bf16()


def auto_dtype(
    settings: ModelSettings,
    total: int | None,
    sample: Callable[[int], list[str]],
    say: Callable[[str], None],
    threads: int | None = None,
    batch_tokens: int | None = None,
) -> str:
    """The dtype a new store's `--dtype auto` runs as: `settings.dtype` unless it calibrates here.

    `total`: the texts the job will encode (None when unknown, e.g. stdin); `sample(n)`: up to
    the run's first n texts. Says one line when it measured.
    """
    from sbert_cli.encoding.devices import DEFAULT_CPU_BATCH_TOKENS

    if not calibrates(settings):
        return settings.dtype
    if total is not None and total <= SMALL_JOB_TEXTS:
        return "fp32"
    budget = batch_tokens or DEFAULT_CPU_BATCH_TOKENS
    key = cache_key(settings, threads, budget)
    cached = read_cache().get(key)
    if isinstance(cached, dict) and cached.get("dtype") in ("fp32", "bf16"):
        return cached["dtype"]
    texts = sample(SAMPLE_FROM)
    if len(texts) < SAMPLE_TEXTS:  # stdin only, or too little to measure: the exact dtype
        return "fp32"
    result = calibrate(settings, spread(texts, SAMPLE_TEXTS), threads, budget)
    _remember(key, result)
    say(
        f"--dtype auto: {result.dtype} (on {result.texts} of this run's texts bf16 took "
        f"{result.bf16_s / result.fp32_s:.0%} of fp32's time on this CPU; measured once, kept in {cache_file()})"
    )
    return result.dtype


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


def choose_dtype(fp32_s: float, bf16_s: float) -> str:
    """bf16 only when it clearly wins (see BF16_MIN_GAIN), else fp32."""
    return "bf16" if bf16_s < BF16_MIN_GAIN * fp32_s else "fp32"


def calibrate(settings: ModelSettings, texts: list[str], threads: int | None, batch_tokens: int) -> Calibration:
    """Time the model in fp32 and bf16 on `texts` (ABBA, best of two each) and pick the dtype.

    Only the model is timed (both dtypes tokenize alike). Each encoder first runs a few texts, so
    one-time kernel setup is not counted; the loser's weights are dropped from the process cache.
    """
    from sbert_cli.encoding.encoder import torch_threads
    from sbert_cli.encoding.loader import load_encoder, unload_encoder

    encoders = {d: load_encoder(replace(settings, dtype=d, backend="torch")) for d in ("fp32", "bf16")}
    seconds: dict[str, list[float]] = {d: [] for d in encoders}
    with torch_threads(threads):
        prepared = {d: _prepare(e, texts, batch_tokens) for d, e in encoders.items()}
        for encoder in encoders.values():  # one-time kernel setup, not counted
            encoder.run(_prepare(encoder, texts[:4], batch_tokens))
        for dtype in ORDER:
            started = time.perf_counter()
            encoders[dtype].run(prepared[dtype])
            seconds[dtype].append(time.perf_counter() - started)
    fp32_s, bf16_s = min(seconds["fp32"]), min(seconds["bf16"])
    dtype = choose_dtype(fp32_s, bf16_s)
    unload_encoder(replace(settings, dtype="fp32" if dtype == "bf16" else "bf16", backend="torch"))
    tokens = prepared["fp32"].tokens
    return Calibration(dtype, fp32_s, bf16_s, len(texts), tokens, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


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


def dtype_for_run(options: EncodeOptions, plan: list[PlannedInput], total: int, say: Callable[[str], None]) -> str:
    """`auto_dtype` for an encode run: its size (unknown with stdin) and its first texts."""
    known = None if any(item.source.is_stdin for item in plan) else total
    return auto_dtype(
        options.model_settings(),
        known,
        lambda n: first_texts(plan, options.read, n),
        say,
        options.threads,
        options.batch_tokens,
    )
