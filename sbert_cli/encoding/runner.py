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
from dataclasses import asdict
from pathlib import Path

from sbert_cli.encoding.chunk_settings import chunker_for, merge_kept_types, merge_scanned_types, row_settings
from sbert_cli.encoding.devices import window_texts
from sbert_cli.encoding.loader import recorded_engine
from sbert_cli.encoding.options import DEFAULT_SHARD_SIZE, EncodeLoop, EncodeOptions, EncodeSummary
from sbert_cli.encoding.plan import PlannedInput, plan_inputs, reset_entry
from sbert_cli.encoding.settings import ModelSettings
from sbert_cli.encoding.stream import WINDOW_TEXTS, input_windows
from sbert_cli.encoding.sync import sync_corpus
from sbert_cli.encoding.windows import WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.inputs.reader import InputSource, ReadStats, Record, expand_inputs, has_records, scan
from sbert_cli.progress import NullReporter, ProgressMeter, ProgressUpdate, Reporter, StageClock
from sbert_cli.store.delete import remove_unlisted
from sbert_cli.store.manifest import StoreManifest
from sbert_cli.store.store import STORAGE_DTYPES, Store, store_lock

PROGRESS_EVERY_S = 0.5  # how often the runner hands the reporter an update (it decides what to show)


def _check_target(options: EncodeOptions, store_path: Path) -> None:
    if options.storage_dtype is not None and options.storage_dtype not in STORAGE_DTYPES:
        raise InputError(f"--storage-dtype {options.storage_dtype}: choose float32 or float16")
    # 0 used to fall through `or` to the default: a number the user gave is used or refused.
    counts = {
        "--shard-size": options.shard_size,
        "--batch-tokens": options.batch_tokens,
        "--threads": options.threads,
        "--workers": options.workers,
        "--max-seq-length": options.max_seq_length,
    }
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    if store_path.exists() and not store_path.is_dir():
        raise InputError(f"{store_path}: exists and is not a store directory")
    if store_path.is_dir() and not Store.exists(store_path) and any(p.name != ".lock" for p in store_path.iterdir()):
        raise InputError(f"{store_path}: directory exists, is not empty and is not an sbert store")


def _inherit_settings(options: EncodeOptions, existing: Store | None) -> EncodeOptions:
    """Settings not given explicitly come from an existing store, so appending 'just works'."""
    _store_layout(options, existing)
    if existing is None:
        return options
    model = existing.model
    options.model = options.model if options.model is not None else model.name
    options.pooling = options.pooling if options.pooling is not None else ",".join(model.pooling)
    options.normalize = options.normalize if options.normalize is not None else model.normalize
    options.max_seq_length = options.max_seq_length or model.max_seq_length
    options.dtype = model.dtype if options.dtype == "auto" else options.dtype
    if options.backend == "auto":  # the engine the store was made with, where this machine has it
        options.backend = recorded_engine(options.model_settings(), model).backend
    if options.prompt is None and options.prompt_name is None:
        options.prompt = model.prompt or ""  # "": no prompt, even if the model has a default one
    return options


def _store_layout(options: EncodeOptions, existing: Store | None) -> None:
    """Storage dtype, texts kept or not, rows per shard, a key column: one of each per store.
    Appending takes the store's; one given that differs is refused (it used to be ignored).
    Inputs without ids may join a store with keys (their key is null), as README's docs_store."""
    if existing is None:
        options.storage_dtype = options.storage_dtype or "float32"
        options.store_text = True if options.store_text is None else options.store_text
        options.shard_size = options.shard_size or DEFAULT_SHARD_SIZE
        return
    manifest = existing.manifest
    if options.read.id_field and not manifest.has_key:
        raise InputError(f"{existing.path}: --id-field given, but this store was made without ids; use a new store")
    texts = {True: "--text", False: "--no-text"}
    given = {
        "--storage-dtype": (options.storage_dtype, manifest.storage_dtype, f"--storage-dtype {options.storage_dtype}"),
        "texts": (options.store_text, manifest.has_text, texts.get(options.store_text)),
        "--shard-size": (options.shard_size, manifest.shard_size, f"--shard-size {options.shard_size}"),
    }
    made = {
        "--storage-dtype": f"keeps {manifest.storage_dtype} vectors",
        "texts": "keeps its texts" if manifest.has_text else "was made with --no-text",
        "--shard-size": f"has {manifest.shard_size:,} rows per shard",
    }
    for name, (value, stored, words) in given.items():
        if value is not None and value != stored:
            raise InputError(
                f"{words}: {existing.path} {made[name]}, and a store has one such setting; "
                "leave the option out to append, or encode into a new store"
            )
    options.storage_dtype, options.store_text, options.shard_size = (
        manifest.storage_dtype,
        manifest.has_text,
        manifest.shard_size,
    )


def _count_records(plan: list[PlannedInput], options: EncodeOptions) -> tuple[int, dict[str, dict]]:
    """Read every file input in full (stdin can only be read once): bad input stops here, before
    anything is written. Returns the records and each input's kept-field types."""
    total, types = 0, {}
    for item in plan:
        if not item.source.is_stdin:
            stats = scan(item.source, options.read)
            item.records = stats.records
            types[item.source.name] = stats.field_types or {}
            total += item.records
        elif not has_records(item.source, options.read):  # read up to its first record only
            item.records = 0
    if all(item.records == 0 for item in plan):
        raise InputError(
            f"{plan[0].source.name}: empty input (no non-blank records)"
            if len(plan) == 1
            else "all inputs are empty (no non-blank records)"
        )
    return total, types


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
    sources = _sources(inputs, options, existing)
    follows = existing is not None and options.sync and options.model_settings() == ModelSettings(device=options.device)
    options = _inherit_settings(options, existing)
    record = _model_record(options, existing, encoder, follows)
    manifest = existing.manifest if existing else StoreManifest(record, options.storage_dtype, options.store_text)
    manifest.shard_size = manifest.shard_size if existing else options.shard_size
    row_settings(options, manifest, existing.manifest if existing else None, loop is not None)
    if existing is not None and options.sync:  # the store follows its inputs (a new one is encoded as usual)
        return _sync(store_path, sources, options, reporter, encoder)
    plan = plan_inputs(sources, manifest.copy(), options.force, reporter.message)
    if not plan:
        return EncodeSummary(str(store_path), inputs_skipped=[s.name for s in sources], store_rows=manifest.rows)
    total, types = _count_records(plan, options)
    if existing is None and encoder is None and loop is None and "auto" in (options.dtype, options.backend):
        from sbert_cli.encoding.calibrate import engine_for_run  # backend, dtype, workers: by measurement

        engine_for_run(options, plan, total, reporter.message)
        manifest.model = describe_model(options.model_settings())
    counted = {item.source.name: item.records for item in plan}
    created = not store_path.exists()
    try:
        with store_lock(store_path):
            # Re-read under the lock: another writer may have committed since we looked.
            if Store.exists(store_path):
                manifest = Store.open(store_path).manifest
            merge_scanned_types(manifest, types)
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


def _model_record(options: EncodeOptions, existing: Store | None, encoder, follows: bool):
    """What vectors this run makes, refused if they do not match an existing store's. A --sync
    that `follows` the store's model (no model option given) resolves nothing, torch not even
    imported, unless there is something to encode: sync_corpus then checks the encoder it loads."""
    from sbert_cli.encoding.loader import describe_model

    if follows and encoder is None:
        return existing.model
    record = encoder.describe() if encoder is not None else describe_model(options.model_settings())
    if existing is not None:
        existing.check_compatible(record, "this run's model")
    return record


def _sync(store_path: Path, sources: list[InputSource], options: EncodeOptions, reporter, encoder) -> EncodeSummary:
    return sync_corpus(store_path, sources, options, reporter, _run_with_settings, encoder)


def _sources(inputs: list[str], options: EncodeOptions, existing: Store | None) -> list[InputSource]:
    """The inputs, checked: --sync needs named files; a missing or cut shard of the store is an
    error, not "nothing to do" (except one of an input --force encodes again)."""
    sources = expand_inputs(inputs, options.glob, options.read.format)
    if options.sync and any(s.is_stdin for s in sources):
        raise InputError("-: --sync follows files and folders; standard input has no name to follow")
    if existing is not None:
        forced = {str(s.path.resolve()) for s in sources if s.path} if options.force else set()
        existing.check_shard_files(frozenset(e.index for e in existing.manifest.inputs if e.path in forced))
    return sources


def _prepare_store(store_path: Path, manifest: StoreManifest, plan: list[PlannedInput], options, summary) -> int:
    """Reset --force inputs, note resumed ones, remove what a crash left; returns rows already done."""
    stale_files: list[str] = []
    done_before = 0
    for item in plan:
        if options.force and (item.entry.rows_done or item.entry.complete):
            stale_files += reset_entry(manifest, item.entry, item.source)
        elif item.entry.rows_done:
            summary.inputs_resumed.append(item.source.name)
            done_before += item.entry.records_done if item.records is not None else 0
    if stale_files:
        manifest.save(store_path)  # forget first, delete after: a crash between is harmless
        for name in stale_files:
            (store_path / name).unlink(missing_ok=True)
    remove_unlisted(store_path, manifest)  # what a crash left: temp names, shards never listed
    return done_before


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
    done_before = _prepare_store(store_path, manifest, plan, options, summary)
    for item in plan:  # how it was read: `sbert check --repair` re-reads an input the same way
        item.entry.read = asdict(options.read)
    return total - done_before


def _windows(
    plan: list[PlannedInput],
    options: EncodeOptions,
    stats: dict[int, ReadStats],
    texts: int = WINDOW_TEXTS,
    chunker=None,
):
    """(payload, texts, token ids) for the encoder: see `stream.input_windows`."""
    return input_windows(plan, options.read, options.shard_size, stats, texts, chunker)


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
    from sbert_cli.store.writer import ManifestSaver, ShardCommitter

    summary = EncodeSummary(str(store_path))
    total = begin_run(store_path, manifest, plan, options, total, reporter, summary)
    clock, stats, started = StageClock(), {}, time.perf_counter()
    committers: dict[int, ShardCommitter] = {}
    size = window_texts(getattr(encoder, "device", "cpu"))  # larger on a GPU: less padding
    chunker = chunker_for(encoder, manifest.chunking, summary.chunking)
    windows = clock.timed("read", _windows(plan, options, stats, size, chunker))
    # Progress per batch, not per window: a log gets its line every interval whatever the window.
    meter = ProgressMeter(reporter, "encoding", total or None, clock, PROGRESS_EVERY_S, unit="records")

    def in_model(payload: tuple[PlannedInput, list[Record] | None], texts: int) -> None:
        # rows (chunks) through the model, and about as many records: batches run in length order,
        # so the records are estimated from the window's first rows; `advance` makes them exact
        whole = sum(getattr(r, "last", True) for r in (payload[1] or ())[:texts])
        meter.in_work(payload[0].source.name, whole, texts)

    batches = encoder.encode_windows(
        windows, clock=clock, workers=options.workers, say=reporter.message, on_batch=in_model
    )
    with ManifestSaver(store_path, manifest) as saver:
        for done in batches:
            item, records = done.payload
            entry = item.entry
            if entry.index not in committers:
                committers[entry.index] = item.committer or ShardCommitter(
                    store_path, manifest, entry, options.shard_size, saver
                )
            committer = committers[entry.index]
            with clock.stage("write"):
                merge_kept_types(manifest, stats[entry.index].field_types, item.source.name)
                if records is not None:
                    committer.add(records, done.embeddings)
                else:
                    _finish_input(committer, item, stats[entry.index], manifest, saver, summary, reporter)
            summary.rows += len(records or ())
            summary.records += sum(getattr(r, "last", True) for r in records or ())
            summary.tokens += done.tokens
            summary.truncated += done.truncated
            meter.advance(
                sum(getattr(r, "last", True) for r in records or ()), done.tokens, item.source.name, len(records or ())
            )
    summary.elapsed = time.perf_counter() - started
    summary.stages = clock.snapshot()
    summary.store_rows = manifest.rows
    reporter.progress(_update(summary, total, summary.elapsed, clock, None, True))
    return summary


def _finish_input(committer, item: PlannedInput, stats: ReadStats, manifest, saver, summary, reporter) -> None:
    """`saver`: a store path (commit now) or a `ManifestSaver` (commit soon)."""
    committer.commit()
    item.entry.complete = True
    item.entry.blank = stats.blank
    if isinstance(saver, Path):
        manifest.save(saver)
    else:
        saver.save()
    summary.blank += stats.blank
    summary.shards += committer.shards_written
    summary.inputs_encoded += 1
    if stats.records == 0:
        reporter.message(f"{item.source.name}: no non-blank records")


def _update(summary: EncodeSummary, total: int, elapsed: float, clock: StageClock, current, final: bool):
    chunks = summary.rows if summary.rows != summary.records else None
    return ProgressUpdate(
        "encoding",
        summary.records,
        total or None,
        elapsed,
        summary.tokens,
        current,
        clock.snapshot(),
        final,
        "records",
        chunks,
    )
