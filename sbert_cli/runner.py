"""Runner: read -> batch -> encode -> write for `sbert encode`, resumable after any crash.

The plan for each input comes from the manifest: inputs already complete are skipped, partial
ones continue after their last committed line, new ones get the next input index. Every input
file is read once up front to validate it, so bad input is refused before the store is touched.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sbert_cli.errors import InputError
from sbert_cli.reader import InputSource, ReadOptions, ReadStats, Record, expand_inputs, read_records, scan
from sbert_cli.store import STORAGE_DTYPES, Store, new_manifest, save_manifest, store_lock

log = logging.getLogger("sbert")

DEFAULT_SHARD_SIZE = 20_000
WINDOW_TEXTS = 2048
WINDOW_CHARS = 4_000_000  # bounds memory for corpora of very long records


@dataclass
class EncodeOptions:
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    pooling: str | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None
    batch_tokens: int | None = None
    threads: int | None = None
    backend: str = "auto"
    storage_dtype: str = "float32"
    store_text: bool = True
    shard_size: int = DEFAULT_SHARD_SIZE
    force: bool = False
    glob: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)


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

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.elapsed if self.elapsed else 0.0


@dataclass
class _Planned:
    source: InputSource
    entry: dict
    records: int | None = None  # known after the validation scan (None for stdin)


def _file_identity(source: InputSource) -> dict:
    if source.path is None:
        return {"path": None, "size": None, "mtime_ns": None}
    st = source.path.stat()
    return {"path": str(source.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _new_entry(index: int, source: InputSource) -> dict:
    return {
        "index": index,
        "source": source.name,
        **_file_identity(source),
        "format": source.format + (".gz" if source.gzipped else ""),
        "rows_done": 0,
        "last_line": 0,
        "shards": 0,
        "complete": False,
        "blank": None,
    }


def _plan(sources: list[InputSource], manifest: dict, force: bool, say: Callable[[str], None]) -> list[_Planned]:
    """Decide, per input, whether to skip it, resume it or start it, from what the manifest says."""
    by_path = {e["path"]: e for e in manifest["inputs"] if e.get("path")}
    next_index = max((e["index"] for e in manifest["inputs"]), default=-1) + 1
    planned: list[_Planned] = []
    seen: set[str] = set()
    for source in sources:
        ident = _file_identity(source)
        if ident["path"] is not None:
            if ident["path"] in seen:
                say(f"{source.name}: named twice; encoding it once")
                continue
            seen.add(ident["path"])
        entry = by_path.get(ident["path"]) if ident["path"] else None
        if entry is None:
            entry = _new_entry(next_index, source)
            next_index += 1
            manifest["inputs"].append(entry)
            planned.append(_Planned(source, entry))
            continue
        changed = (entry["size"], entry["mtime_ns"]) != (ident["size"], ident["mtime_ns"])
        if force:
            planned.append(_Planned(source, entry))
            continue
        if entry["complete"]:
            note = " (it changed since; --force re-encodes it)" if changed else " (--force re-encodes it)"
            say(f"{source.name}: already encoded, {entry['rows_done']} rows; skipping{note}")
            continue
        if changed:
            raise InputError(
                f"{source.name}: changed since it was partly encoded ({entry['rows_done']} rows); "
                "use --force to encode it again from the start"
            )
        planned.append(_Planned(source, entry))
    return planned


def _reset_entry(manifest: dict, entry: dict, source: InputSource) -> list[str]:
    """Forget an input's shards (for --force); returns their files, deleted after the manifest."""
    files = [s["file"] for s in manifest["shards"] if s["input"] == entry["index"]]
    manifest["shards"] = [s for s in manifest["shards"] if s["input"] != entry["index"]]
    entry.update(_new_entry(entry["index"], source))
    return files


def _model_settings(options: EncodeOptions, existing: Store | None) -> EncodeOptions:
    """Settings not given explicitly come from an existing store, so appending 'just works'."""
    if existing is None:
        return options
    model = existing.model
    if options.model is None:
        options.model = model["name"]
    if options.pooling is None:
        options.pooling = ",".join(model["pooling"])
    if options.normalize is None:
        options.normalize = model["normalize"]
    if options.max_seq_length is None:
        options.max_seq_length = model["max_seq_length"]
    if options.dtype == "auto":
        options.dtype = model["dtype"]
    return options


def _aligned_windows(records: Iterator[Record], shard_size: int) -> Iterator[list[Record]]:
    """Windows that never straddle a shard boundary: a resumed run (which starts at a boundary)
    then forms exactly the same batches as an uninterrupted one, so its vectors are identical."""
    window: list[Record] = []
    chars = 0
    in_shard = 0
    for record in records:
        window.append(record)
        chars += len(record.text)
        in_shard += 1
        if len(window) >= WINDOW_TEXTS or chars >= WINDOW_CHARS or in_shard == shard_size:
            yield window
            window, chars = [], 0
            in_shard %= shard_size
    if window:
        yield window


def encode_corpus(
    inputs: list[str],
    store_path: str | Path,
    options: EncodeOptions | None = None,
    *,
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
    encoder=None,
) -> EncodeSummary:
    """Encode `inputs` into the store at `store_path` (created, appended to, or resumed)."""
    from sbert_cli.encoder import cached_encoder, resolve_backend, resolve_device, resolve_dtype
    from sbert_cli.model import load_spec

    options = options or EncodeOptions()
    say = say or (lambda msg: log.info(msg))
    store_path = Path(store_path)
    if options.storage_dtype not in STORAGE_DTYPES:
        raise InputError(f"--storage-dtype {options.storage_dtype}: choose float32 or float16")
    if options.shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    if store_path.exists() and not store_path.is_dir():
        raise InputError(f"{store_path}: exists and is not a store directory")
    if store_path.is_dir() and not Store.exists(store_path) and any(p.name != ".lock" for p in store_path.iterdir()):
        raise InputError(f"{store_path}: directory exists, is not empty and is not an sbert store")
    existing = Store.open(store_path) if Store.exists(store_path) else None
    sources = expand_inputs(inputs, options.glob, options.read.format)
    options = _model_settings(options, existing)

    if encoder is None:
        spec = load_spec(options.model, options.pooling, options.normalize, options.max_seq_length)
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device)
        model_desc = {**spec.describe(), "dtype": dtype, "backend": resolve_backend(options.backend, device, dtype)}
    else:
        model_desc = encoder.describe()
    if existing is not None:
        existing.check_compatible(model_desc, "this run's model")

    # Validate every file input in full before anything is written (stdin can only be read once).
    manifest = (
        existing.manifest
        if existing
        else new_manifest(model_desc, options.storage_dtype, options.store_text, options.shard_size)
    )
    plan = _plan(sources, _copy(manifest), options.force, say)
    if not plan:
        return EncodeSummary(
            str(store_path), inputs_skipped=[s.name for s in sources], store_rows=existing.rows if existing else 0
        )
    total_records = 0
    for item in plan:
        if not item.source.is_stdin:
            item.records = scan(item.source, options.read).records
            total_records += item.records
    if all(item.records == 0 for item in plan):
        raise InputError(
            f"{plan[0].source.name}: empty input (no non-blank records)"
            if len(plan) == 1
            else "all inputs are empty (no non-blank records)"
        )
    if options.read.id_field and existing is not None and not existing.manifest.get("has_key"):
        raise InputError(f"{store_path}: --id-field given, but this store was made without ids; use a new store")

    created = not store_path.exists()
    try:
        with store_lock(store_path):
            # Re-read under the lock: another writer may have committed since we looked.
            if Store.exists(store_path):
                manifest = Store.open(store_path).manifest
            if options.read.id_field and not manifest["shards"]:
                manifest["has_key"] = True
            counted = {item.source.name: item.records for item in plan}
            plan = _plan([item.source for item in plan], manifest, options.force, lambda _: None)
            for item in plan:
                item.records = counted.get(item.source.name)
            if encoder is None:
                encoder = cached_encoder(
                    options.model,
                    device=options.device,
                    dtype=options.dtype,
                    pooling=options.pooling,
                    normalize=options.normalize,
                    max_seq_length=options.max_seq_length,
                    backend=options.backend,
                )
            if options.batch_tokens:
                encoder.batch_tokens = options.batch_tokens
            if options.threads:
                import torch

                torch.set_num_threads(options.threads)
            summary = _run(encoder, store_path, manifest, plan, options, total_records, quiet, say)
            encoded = {item.source.name for item in plan}
            summary.inputs_skipped = [s.name for s in sources if s.name not in encoded]
            return summary
    except BaseException:
        if created and not Store.exists(store_path):
            shutil.rmtree(store_path, ignore_errors=True)
        raise


def _copy(manifest: dict) -> dict:
    import copy

    return copy.deepcopy(manifest)


def _run(
    encoder,
    store_path: Path,
    manifest: dict,
    plan: list[_Planned],
    options: EncodeOptions,
    total_records: int,
    quiet: bool,
    say: Callable[[str], None],
) -> EncodeSummary:
    """Encode the planned inputs under the lock, committing shard by shard."""
    from sbert_cli.progress import Progress
    from sbert_cli.writer import ShardCommitter

    summary = EncodeSummary(str(store_path))
    stale_files: list[str] = []
    for item in plan:
        if options.force and (item.entry["rows_done"] or item.entry["complete"]):
            stale_files += _reset_entry(manifest, item.entry, item.source)
        elif item.entry["rows_done"]:
            summary.inputs_resumed.append(item.source.name)
            say(
                f"{item.source.name}: resuming after line {item.entry['last_line']} ({item.entry['rows_done']} rows done)"
            )
            if item.records is not None:
                total_records -= item.entry["rows_done"]
    if stale_files:
        save_manifest(store_path, manifest)  # forget first, delete after: a crash between is harmless
        for name in stale_files:
            (store_path / name).unlink(missing_ok=True)
    # Files a crash left behind: temp names, and shards written but never listed.
    listed = {s["file"] for s in manifest["shards"]}
    shard_dir = store_path / "shards"
    if shard_dir.is_dir():
        for f in shard_dir.iterdir():
            if f"shards/{f.name}" not in listed:
                f.unlink(missing_ok=True)

    stats_by_input: dict[int, ReadStats] = {}

    def stream() -> Iterator[tuple[tuple[str, _Planned, list[Record]], list[str]]]:
        for item in plan:
            stats = stats_by_input.setdefault(item.entry["index"], ReadStats())
            skip = item.entry["last_line"]
            records = (r for r in read_records(item.source, options.read, stats) if r.line > skip)
            for window in _aligned_windows(records, options.shard_size):
                yield ("rows", item, window), [r.text for r in window]
            yield ("end", item, []), []

    committers: dict[int, ShardCommitter] = {}
    with Progress("encoding", total_records or None, quiet=quiet) as progress:
        for done in encoder.encode_windows(stream()):
            kind, item, records = done.payload
            entry = item.entry
            committer = committers.setdefault(
                entry["index"], ShardCommitter(store_path, manifest, entry, options.shard_size)
            )
            if kind == "rows":
                committer.add(records, done.embeddings)
                summary.rows += len(records)
                summary.tokens += done.tokens
                summary.truncated += done.truncated
                progress.advance(len(records), done.tokens)
                continue
            committer.commit()
            stats = stats_by_input[entry["index"]]
            entry["complete"] = True
            entry["blank"] = stats.blank
            save_manifest(store_path, manifest)
            summary.blank += stats.blank
            summary.shards += committer.shards_written
            summary.inputs_encoded += 1
            if stats.records == 0:
                say(f"{item.source.name}: no non-blank records")
        summary.elapsed = progress.elapsed
    summary.store_rows = sum(s["rows"] for s in manifest["shards"])
    return summary
