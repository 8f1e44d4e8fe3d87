"""A store's row settings, chosen once and kept: chunking (chunk or truncate, size, overlap) and
the kept fields with their types. A new store takes this run's; an append inherits the store's
and refuses different ones, with one line naming both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from sbert_cli.chunking import CHUNK, DEFAULT_OVERLAP, TRUNCATE, Chunker, ChunkPlan, ChunkStats
from sbert_cli.errors import InputError, SbertError
from sbert_cli.inputs.fields import merge_type
from sbert_cli.store.manifest import ChunkingRecord, KeptField, ModelRecord, StoreManifest


def resolve_chunking(
    mode: str | None, size: int | None, overlap: int | None, model: ModelRecord, store: StoreManifest | None
) -> ChunkingRecord:
    """This run's chunking: the flags given, else the store's, else chunks of half the model's
    max_seq_length (128 tokens for all-MiniLM-L6-v2, the length it was trained on: in
    benchmarks/bench_documents.py, chunks of 128 found the document hiding a sentence as often
    as encoding it paragraph by paragraph does, chunks of 256 far less often) for records longer
    than max_seq_length, while a record the model reads whole stays one row, as before chunking
    (a paragraph, a ticket). `--chunk-size` cuts every record longer than the size given."""
    if mode == TRUNCATE and (size is not None or overlap is not None):
        raise InputError("--truncate keeps one row per record; it does not take --chunk-size or --chunk-overlap")
    if size is not None and not 1 <= size <= model.max_seq_length:
        raise InputError(f"--chunk-size {size}: choose 1 to the model's max_seq_length ({model.max_seq_length})")
    if overlap is not None and overlap < 0:
        raise InputError(f"--chunk-overlap {overlap}: must be 0 or more")
    size_default = max(1, model.max_seq_length // 2)
    default = ChunkingRecord(CHUNK, size_default, default_overlap(size_default), model.max_seq_length)
    base = store.chunking if store is not None else default
    if mode is None:
        mode = CHUNK if (size is not None or overlap is not None) else base.mode
    if mode == TRUNCATE:
        wanted = ChunkingRecord(TRUNCATE, model.max_seq_length, 0)
    else:
        inherited = base if base.mode == CHUNK else default
        if size is not None and base.mode != CHUNK or size is not None and store is None:
            inherited = ChunkingRecord(CHUNK, size, default_overlap(size), size)
        wanted = ChunkingRecord(
            CHUNK,
            size if size is not None else inherited.size,
            overlap if overlap is not None else inherited.overlap,
            size if size is not None else inherited.whole,
        )
    if store is not None and wanted != store.chunking:
        raise InputError(f"this store was made with {describe(store.chunking)}; this run asks for {describe(wanted)}")
    return wanted


def default_overlap(size: int) -> int:
    """32 tokens, or a quarter of a smaller chunk: chunks of any size get some overlap."""
    return min(DEFAULT_OVERLAP, size // 4)


def describe(chunking: ChunkingRecord) -> str:
    if chunking.mode == TRUNCATE:
        return f"--truncate (at {chunking.size} tokens)"
    whole = f" (records up to {chunking.whole} tokens whole)" if chunking.whole > chunking.size else ""
    return f"chunks of {chunking.size} tokens overlapping by {chunking.overlap}{whole}"


def chunk_plan(chunking: ChunkingRecord) -> ChunkPlan:
    return ChunkPlan(**asdict(chunking))


def resolve_kept(names: Sequence[str], store: StoreManifest | None) -> tuple[str, ...]:
    """This run's kept fields: the ones given, else the store's; an append may not change them."""
    if store is None:
        return tuple(names)
    stored = tuple(k.name for k in store.kept_fields)
    if names and tuple(names) != stored:
        have = ",".join(stored) if stored else "no kept fields"
        raise InputError(f"this store keeps {have}; this run asks for --keep-fields {','.join(names)}")
    return stored


def merge_kept_types(manifest: StoreManifest, found: dict[str, str | None] | None, source: str) -> None:
    """Fold the types an input's values have into the manifest's, refusing a change of type."""
    for kept in manifest.kept_fields:
        new = (found or {}).get(kept.name)
        try:
            merged = merge_type(kept.type, new)
        except ValueError:
            raise InputError(
                f"{source}: field {kept.name!r} is {new} here, but {kept.type} in the store; use another store"
            ) from None
        if kept.type == "integer" and merged == "float" and manifest.shards:
            raise InputError(
                f"{source}: field {kept.name!r} has floats here, but the store holds it as integers; use another store"
            )
        kept.type = merged


def merge_scanned_types(manifest: StoreManifest, types: dict[str, dict]) -> None:
    """`merge_kept_types` for every scanned input (types by input name)."""
    for source, found in types.items():
        merge_kept_types(manifest, found, source)


def kept_layout(names: Sequence[str]) -> list[KeptField]:
    return [KeptField(name) for name in names]


def chunker_for(encoder, chunking: ChunkingRecord, stats: ChunkStats) -> Chunker:
    """The chunking stage for `encoder`'s tokenizer, its settings checked against the prompt."""
    return chunker_from_counter(encoder.token_counter(), chunking, stats, encoder.describe().name)


def chunker_from_counter(counter, chunking: ChunkingRecord, stats: ChunkStats, name: str) -> Chunker:
    """`chunker_for` with a tokenizer alone (a Ray driver cuts records without loading the weights)."""
    if counter is None:
        raise SbertError(f"{name}: its tokenizer gives no character offsets, so it cannot chunk")
    plan = chunk_plan(chunking)
    overhead = counter.tokenize([""])[0].count  # special tokens and the prompt
    if plan.mode == CHUNK and plan.size - overhead <= plan.overlap:
        raise InputError(
            f"--chunk-size {plan.size} leaves {max(plan.size - overhead, 0)} tokens for text after {overhead} "
            f"special and prompt tokens, not more than --chunk-overlap {plan.overlap}; use a larger size or less overlap"
        )
    return Chunker(counter, plan, stats)


def row_settings(options, manifest: StoreManifest, stored: StoreManifest | None, ray: bool = False) -> None:
    """Chunking and kept fields (`options`: the run's EncodeOptions): this run's for a new store,
    which also gets the record_hash column (--sync), and the store's (checked) for an append.
    Local and Ray runs make the same rows (distributed/ray_encode.py chunks in the driver), so
    `ray` no longer changes anything; the runner still says which it is."""
    chunking = resolve_chunking(options.chunk_mode, options.chunk_size, options.chunk_overlap, manifest.model, stored)
    options.read.keep_fields = resolve_kept(options.read.keep_fields, stored)
    if stored is None:
        manifest.chunking, manifest.kept_fields = chunking, kept_layout(options.read.keep_fields)
        manifest.has_record_hash = True
