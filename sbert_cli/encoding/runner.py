"""The encode runner: read -> tokenize/batch -> model -> write, resumable after any crash.

`encode_corpus` checks and plans (encoding/plan.py), validates every input file in full before
the store is touched, then `_run` is the loop: windows are read (a background thread also
tokenizes them), the model encodes them, the writer commits shards, and a `StageClock` times
each stage for the progress reports and the summary.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from sbert_cli.encoding.devices import window_texts
from sbert_cli.encoding.loader import ModelSettings
from sbert_cli.encoding.plan import PlannedInput, plan_inputs, reset_entry
from sbert_cli.encoding.windows import WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.inputs.reader import ReadOptions, ReadStats, Record, expand_inputs, read_records, scan
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter, StageClock
from sbert_cli.store.atomic import is_temp_name
from sbert_cli.store.manifest import StoreManifest
from sbert_cli.store.store import STORAGE_DTYPES, Store, store_lock

DEFAULT_SHARD_SIZE = 20_000
WINDOW_TEXTS = 2048
WINDOW_CHARS = 4_000_000  # bounds memory for corpora of very long records
PROGRESS_EVERY_S = 0.5  # how often the runner hands the reporter an update (it decides what to show)


@dataclass
class EncodeOptions(ModelSettings):
    """What `sbert encode` takes: the model settings, then how to batch, store and read."""

    batch_tokens: int | None = None
    threads: int | None = None
    workers: int | None = None  # prepare (tokenizer) threads; None: the cores the model does not need
    storage_dtype: str = "float32"
    store_text: bool = True
    shard_size: int = DEFAULT_SHARD_SIZE
    force: bool = False
    glob: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)

    def model_settings(self) -> ModelSettings:
        return ModelSettings(**{f.name: getattr(self, f.name) for f in fields(ModelSettings)})


@dataclass
class EncodeSummary:
    store: str
    rows: int = 0
    shards: int = 0
    blank: int = 0
    truncated: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    inputs_encoded: int = 0
    inputs_skipped: list[str] = field(default_factory=list)
    inputs_resumed: list[str] = field(default_factory=list)
    store_rows: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage: read, tokenize, model, write

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.elapsed if self.elapsed else 0.0


# (store_path, manifest, plan, options, total rows, reporter) -> summary: `_run` with its encoder
# bound, or another executor's loop (distributed/ray_encode.py), called under the store lock.
EncodeLoop = Callable[[Path, StoreManifest, list[PlannedInput], EncodeOptions, int, Reporter], EncodeSummary]


def _check_target(options: EncodeOptions, store_path: Path) -> None:
    if options.storage_dtype not in STORAGE_DTYPES:
        raise InputError(f"--storage-dtype {options.storage_dtype}: choose float32 or float16")
    if options.shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    if store_path.exists() and not store_path.is_dir():
        raise InputError(f"{store_path}: exists and is not a store directory")
    if store_path.is_dir() and not Store.exists(store_path) and any(p.name != ".lock" for p in store_path.iterdir()):
        raise InputError(f"{store_path}: directory exists, is not empty and is not an sbert store")


def _inherit_settings(options: EncodeOptions, existing: Store | None) -> EncodeOptions:
    """Settings not given explicitly come from an existing store, so appending 'just works'."""
    if existing is None:
        return options
    model = existing.model
    options.model = options.model if options.model is not None else model.name
    options.pooling = options.pooling if options.pooling is not None else ",".join(model.pooling)
    options.normalize = options.normalize if options.normalize is not None else model.normalize
    options.max_seq_length = options.max_seq_length or model.max_seq_length
    options.dtype = model.dtype if options.dtype == "auto" else options.dtype
    if options.prompt is None and options.prompt_name is None:
        options.prompt = model.prompt or ""  # "": no prompt, even if the model has a default one
    return options


def _count_records(plan: list[PlannedInput], options: EncodeOptions) -> int:
    """Read every file input in full (stdin can only be read once): bad input stops here, before
    anything is written."""
    total = 0
    for item in plan:
        if not item.source.is_stdin:
            item.records = scan(item.source, options.read).records
            total += item.records
    if all(item.records == 0 for item in plan):
        raise InputError(
            f"{plan[0].source.name}: empty input (no non-blank records)"
            if len(plan) == 1
            else "all inputs are empty (no non-blank records)"
        )
    return total


def encode_corpus(
    inputs: list[str],
    store_path: str | Path,
    options: EncodeOptions | None = None,
    *,
    reporter: Reporter | None = None,
    encoder: WindowEncoder | None = None,
    loop: EncodeLoop | None = None,
) -> EncodeSummary:
    """Encode `inputs` into the store at `store_path` (created, appended to, or resumed).

    `loop` replaces the in-process encode loop (`_run`) with another executor's, e.g. Ray workers
    (sbert_cli/distributed/): checks, planning, the lock and the manifest stay the same.
    """
    from sbert_cli.encoding.loader import describe_model, load_encoder

    options, reporter, store_path = options or EncodeOptions(), reporter or NullReporter(), Path(store_path)
    _check_target(options, store_path)
    existing = Store.open(store_path) if Store.exists(store_path) else None
    sources = expand_inputs(inputs, options.glob, options.read.format)
    options = _inherit_settings(options, existing)
    record = encoder.describe() if encoder is not None else describe_model(options.model_settings())
    if existing is not None:
        existing.check_compatible(record, "this run's model")
    manifest = existing.manifest if existing else StoreManifest(record, options.storage_dtype, options.store_text)
    manifest.shard_size = manifest.shard_size if existing else options.shard_size
    plan = plan_inputs(sources, manifest.copy(), options.force, reporter.message)
    if not plan:
        return EncodeSummary(str(store_path), inputs_skipped=[s.name for s in sources], store_rows=manifest.rows)
    total = _count_records(plan, options)
    if existing is None and encoder is None and loop is None and options.dtype == "auto":
        from sbert_cli.encoding.calibrate import engine_for_run  # backend, dtype, workers: by measurement

        engine_for_run(options, plan, total, reporter.message)
        manifest.model = describe_model(options.model_settings())
    counted = {item.source.name: item.records for item in plan}
    if options.read.id_field and existing is not None and not existing.manifest.has_key:
        raise InputError(f"{store_path}: --id-field given, but this store was made without ids; use a new store")
    created = not store_path.exists()
    try:
        with store_lock(store_path):
            # Re-read under the lock: another writer may have committed since we looked.
            if Store.exists(store_path):
                manifest = Store.open(store_path).manifest
            manifest.has_key = manifest.has_key or bool(options.read.id_field and not manifest.shards)
            plan = plan_inputs([item.source for item in plan], manifest, options.force, lambda _: None)
            for item in plan:
                item.records = counted.get(item.source.name)
            if loop is None:  # encode in this process (another loop loads the model where it runs)
                encoder = encoder or load_encoder(options.model_settings())
                loop = functools.partial(_run_with_settings, encoder)
            summary = loop(store_path, manifest, plan, options, total, reporter)
            summary.inputs_skipped = [s.name for s in sources if s.name not in {i.source.name for i in plan}]
            return summary
    except BaseException:
        if created and not Store.exists(store_path):
            shutil.rmtree(store_path, ignore_errors=True)
        raise


def _prepare_store(store_path: Path, manifest: StoreManifest, plan: list[PlannedInput], options, summary) -> int:
    """Reset --force inputs, note resumed ones, remove what a crash left; returns rows already done."""
    stale_files: list[str] = []
    done_before = 0
    for item in plan:
        if options.force and (item.entry.rows_done or item.entry.complete):
            stale_files += reset_entry(manifest, item.entry, item.source)
        elif item.entry.rows_done:
            summary.inputs_resumed.append(item.source.name)
            done_before += item.entry.rows_done if item.records is not None else 0
    if stale_files:
        manifest.save(store_path)  # forget first, delete after: a crash between is harmless
        for name in stale_files:
            (store_path / name).unlink(missing_ok=True)
    remove_leftovers(store_path, manifest)
    return done_before


def remove_leftovers(store_path: Path, manifest: StoreManifest) -> None:
    """Delete files a crash left behind: temp names, and shards written but never listed."""
    listed = {s.file for s in manifest.shards}
    shard_dir = store_path / "shards"
    if shard_dir.is_dir():
        for f in shard_dir.iterdir():
            if f"shards/{f.name}" not in listed or is_temp_name(f.name):
                f.unlink(missing_ok=True)


def begin_run(
    store_path: Path,
    manifest: StoreManifest,
    plan: list[PlannedInput],
    options: EncodeOptions,
    total: int,
    reporter: Reporter,
    summary: EncodeSummary,
) -> int:
    """What every encode loop does first: note resumed inputs, clean up, return the rows to do."""
    for item in plan:
        if item.entry.rows_done and not options.force:
            reporter.message(
                f"{item.source.name}: resuming after line {item.entry.last_line} ({item.entry.rows_done} rows done)"
            )
    return total - _prepare_store(store_path, manifest, plan, options, summary)


def _aligned_windows(records: Iterator[Record], shard_size: int, texts: int = WINDOW_TEXTS) -> Iterator[list[Record]]:
    """Windows that never straddle a shard boundary: a resumed run (which starts at a boundary)
    then forms exactly the same batches as an uninterrupted one, so its vectors are identical."""
    window: list[Record] = []
    chars = 0
    in_shard = 0
    for record in records:
        window.append(record)
        chars += len(record.text)
        in_shard += 1
        if len(window) >= texts or chars >= WINDOW_CHARS or in_shard == shard_size:
            yield window
            window, chars = [], 0
            in_shard %= shard_size
    if window:
        yield window


def _windows(plan: list[PlannedInput], options: EncodeOptions, stats: dict[int, ReadStats], texts: int = WINDOW_TEXTS):
    """(payload, texts) for the encoder: each input's windows (of at most `texts` texts), then an
    end marker per input."""
    for item in plan:
        input_stats = stats.setdefault(item.entry.index, ReadStats())
        skip = item.entry.last_line
        records = (r for r in read_records(item.source, options.read, input_stats) if r.line > skip)
        for window in _aligned_windows(records, options.shard_size, texts):
            yield (item, window), [r.text for r in window]
        yield (item, None), []


def _run_with_settings(encoder: WindowEncoder, *args) -> EncodeSummary:
    """`_run` with this run's --batch-tokens and --threads on the encoder, put back afterwards:
    `load_encoder` shares encoders across calls, so a setting must not outlive its run."""
    options: EncodeOptions = args[3]
    saved = (encoder.batch_tokens, getattr(encoder, "threads", None))
    encoder.batch_tokens = options.batch_tokens or encoder.batch_tokens
    if options.threads:
        encoder.threads = options.threads
    try:
        return _run(encoder, *args)
    finally:
        encoder.batch_tokens, encoder.threads = saved


def _run(
    encoder: WindowEncoder,
    store_path: Path,
    manifest: StoreManifest,
    plan: list[PlannedInput],
    options: EncodeOptions,
    total: int,
    reporter: Reporter,
) -> EncodeSummary:
    """The loop: read and tokenize (background thread), model, write; each stage timed."""
    from sbert_cli.store.writer import ShardCommitter

    summary = EncodeSummary(str(store_path))
    total = begin_run(store_path, manifest, plan, options, total, reporter, summary)
    clock, stats, started, last_report = StageClock(), {}, time.perf_counter(), 0.0
    committers: dict[int, ShardCommitter] = {}
    size = window_texts(getattr(encoder, "device", "cpu"))  # larger on a GPU: less padding
    windows = clock.timed("read", _windows(plan, options, stats, size))
    for done in encoder.encode_windows(windows, clock=clock, workers=options.workers, say=reporter.message):
        item, records = done.payload
        entry = item.entry
        committer = committers.setdefault(entry.index, ShardCommitter(store_path, manifest, entry, options.shard_size))
        with clock.stage("write"):
            if records is not None:
                committer.add(records, done.embeddings)
            else:
                _finish_input(committer, item, stats[entry.index], manifest, store_path, summary, reporter)
        summary.rows += len(records or ())
        summary.tokens += done.tokens
        summary.truncated += done.truncated
        now = time.perf_counter()
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            reporter.progress(_update(summary, total, now - started, clock, item.source.name, False))
    summary.elapsed = time.perf_counter() - started
    summary.stages = clock.snapshot()
    summary.store_rows = manifest.rows
    reporter.progress(_update(summary, total, summary.elapsed, clock, None, True))
    return summary


def _finish_input(
    committer, item: PlannedInput, stats: ReadStats, manifest, store_path: Path, summary, reporter
) -> None:
    committer.commit()
    item.entry.complete = True
    item.entry.blank = stats.blank
    manifest.save(store_path)
    summary.blank += stats.blank
    summary.shards += committer.shards_written
    summary.inputs_encoded += 1
    if stats.records == 0:
        reporter.message(f"{item.source.name}: no non-blank records")


def _update(summary: EncodeSummary, total: int, elapsed: float, clock: StageClock, current, final: bool):
    return ProgressUpdate(
        "encoding", summary.rows, total or None, elapsed, summary.tokens, current, clock.snapshot(), final
    )
