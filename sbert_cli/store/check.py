"""`sbert check`: verify everything a store holds, and say what is wrong, one problem at a time.

What is checked: the manifests parse; every listed file exists with the size and checksum it was
written with (store/integrity.py; nothing is taken from this process's cache of verified files);
each shard's rows, ids and vectors are what the manifest records (ids unique within the shard
and inside its recorded range; shards' ranges disjoint, so ids are unique across the store;
rows per input add up); the dense index and the keyword index cover only shards the store holds,
as they are now, and their row counts add up. Shards not indexed yet are a note, not a problem:
search covers them exactly until `sbert index` adds them.

Only store/ is used here: checking reads what the manifests promise, never an index library,
so a damaged file cannot crash the checker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter
from sbert_cli.store.integrity import expected_of, forget_verified, index_fix, shard_fix, verify_file
from sbert_cli.store.manifest import (
    INDEX_DIR,
    KEYWORD_DIR,
    MANIFEST,
    CoveredShard,
    IndexManifest,
    KeywordManifest,
    ShardInfo,
)
from sbert_cli.store.store import Store, embeddings_to_numpy, split_id


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the file, what is wrong with it, and what fixes it. `kind` groups them
    for `--repair`: manifest, shard, index, keyword."""

    path: str
    problem: str
    fix: str
    kind: str
    shard: str | None = None  # the shard's name in the manifest, for kind "shard"

    @property
    def line(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"


@dataclass
class CheckReport:
    store: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0
    rows: int = 0
    files: int = 0  # files verified by checksum
    bytes: int = 0
    indexes: list[str] = field(default_factory=list)  # what was found besides the shards

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        for problem in data["problems"]:
            problem.pop("shard")
        return data


def check_store(store_path: str | Path, reporter: Reporter | None = None) -> CheckReport:
    """Verify the store at `store_path` and everything in it; never raises for damage found."""
    reporter = reporter or NullReporter()
    store_path = Path(store_path)
    report = CheckReport(str(store_path))
    forget_verified()  # a check hashes every file, whatever this process read before
    try:
        store = Store.open(store_path)
    except InputError as exc:
        if not (store_path / MANIFEST).is_file():
            raise
        fix = "restore it from a backup, or encode the inputs again into a new store"
        report.problems.append(Problem(str(store_path / MANIFEST), _strip_path(str(exc)), fix, "manifest"))
        return report
    report.problems += _manifest_problems(store)
    _check_shards(store, report, reporter)
    _check_dense_index(store, report)
    _check_keyword_index(store, report)
    return report


def _strip_path(message: str) -> str:
    """`PATH: what` -> `what` (a Problem carries its path apart)."""
    return message.split(": ", 1)[1] if ": " in message else message


# -- the store's manifest ---------------------------------------------------------------------------
def _manifest_problems(store: Store) -> Iterator[Problem]:
    path, fix = str(store.path / MANIFEST), "restore it from a backup, or encode the inputs again into a new store"
    inputs = {e.index: e for e in store.manifest.inputs}
    if len(inputs) != len(store.manifest.inputs):
        yield Problem(path, "lists an input index twice", fix, "manifest")
    names = [s.file for s in store.shards]
    if len(set(names)) != len(names):
        yield Problem(path, "lists a shard twice", fix, "manifest")
    for shard in store.shards:
        if shard.input not in inputs or split_id(shard.id_min)[0] != shard.input or shard.id_min > shard.id_max:
            yield Problem(path, f"{shard.file}: its input or id range is not consistent", fix, "manifest")
    by_id = sorted(store.shards, key=lambda s: s.id_min)
    for before, after in zip(by_id, by_id[1:], strict=False):
        if after.id_min <= before.id_max:
            yield Problem(path, f"{before.file} and {after.file}: id ranges overlap", fix, "manifest")
    for entry in store.manifest.inputs:
        rows = sum(s.rows for s in store.shards if s.input == entry.index)
        if rows != entry.rows_done:
            yield Problem(
                path, f"input {entry.source}: {entry.rows_done:,} rows done, shards hold {rows:,}", fix, "manifest"
            )


# -- shards ---------------------------------------------------------------------------------------
def _check_shards(store: Store, report: CheckReport, reporter: Reporter) -> None:
    fix, started = shard_fix(store.path), time.perf_counter()
    for n, shard in enumerate(store.shards, 1):
        path = store.shard_path(shard)
        try:
            table = store.read_shard(shard)  # verifies size and checksum as it reads
            problem = _shard_content_problem(store, shard, table)
        except SbertError as exc:
            problem = _strip_path(str(exc)).split("; repair with")[0]
        if problem is not None:
            report.problems.append(Problem(str(path), problem, fix, "shard", shard.file))
        else:
            report.files += 1
            report.bytes += shard.bytes
        report.shards += 1
        report.rows += shard.rows
        elapsed = time.perf_counter() - started
        reporter.progress(ProgressUpdate("checking", n, len(store.shards), elapsed, unit="shards"))
    listed = {s.file for s in store.shards}
    folder = store.path / "shards"
    extra = [p.name for p in folder.iterdir() if f"shards/{p.name}" not in listed] if folder.is_dir() else []
    if extra:
        report.notes.append(
            f"{folder}: {len(extra)} file(s) no manifest lists (left by a crash; the next encode removes them)"
        )


def _shard_content_problem(store: Store, shard: ShardInfo, table) -> str | None:
    """What is wrong inside a shard whose bytes are the ones written (a writer's bug, or a
    manifest edited by hand), or None."""
    if sorted(table.column_names) != sorted(store.columns()):
        return f"its columns {table.column_names} are not the store's {store.columns()}"
    ids = table.column("id").to_numpy()
    if len(ids) and (ids.min() != shard.id_min or ids.max() != shard.id_max):
        return f"its ids run {ids.min()}..{ids.max()}, manifest.json says {shard.id_min}..{shard.id_max}"
    if len(np.unique(ids)) != len(ids):
        return "an id appears twice"
    try:
        vectors = embeddings_to_numpy(table.column("embedding"), store.dim)
    except ValueError as exc:
        return f"its vectors are not of dimension {store.dim} ({exc})"
    if len(vectors) != len(ids) or not np.isfinite(vectors).all():
        return "its vectors hold NaN or infinite values"
    return None


# -- indexes --------------------------------------------------------------------------------------
def _coverage_problem(store: Store, covered: list[CoveredShard], rows: int, what: str) -> str | None:
    current = {s.file: s.sha256 for s in store.shards}
    for shard in covered:
        if shard.file not in current:
            return f"the {what} is stale: it holds {shard.file}, which the store no longer lists"
        if current[shard.file] != shard.sha256:
            return f"the {what} is stale: {shard.file} was re-encoded since it was built"
    if sum(s.rows for s in covered) != rows:
        return f"the {what} holds {rows:,} rows, the shards it covers {sum(s.rows for s in covered):,}"
    if len({s.file for s in covered}) != len(covered):
        return f"the {what} lists a shard twice"
    return None


def _verify_files(files: list[tuple[Path, object]], report: CheckReport, fix: str, kind: str) -> None:
    for path, record in files:
        try:
            verify_file(path, expected_of(record, "index file", fix))
        except SbertError as exc:
            report.problems.append(Problem(str(path), _strip_path(str(exc)).split(f"; {fix}")[0], fix, kind))
        else:
            report.files += 1
            report.bytes += record.bytes


def _pending_note(store: Store, covered: list[CoveredShard], what: str) -> None | str:
    pending = [s for s in store.shards if s.file not in {c.file for c in covered}]
    if not pending:
        return None
    rows = sum(s.rows for s in pending)
    return f"{len(pending)} shard(s) ({rows:,} rows) are not in the {what} yet (sbert index {store.path} adds them)"


def _check_dense_index(store: Store, report: CheckReport) -> None:
    fix = index_fix(store.path)
    try:
        manifest = IndexManifest.load(store.path)
    except InputError as exc:
        report.problems.append(
            Problem(str(IndexManifest.path_in(store.path)), _strip_path(str(exc)).split("; rebuild")[0], fix, "index")
        )
        return
    if manifest is None:
        return
    kind = "HNSW" if manifest.quantize == "none" else manifest.quantize
    parts = f", {len(manifest.partitions)} partitions" if manifest.partitions else ""
    report.indexes.append(f"{kind} index{parts}")
    folder = store.path / INDEX_DIR
    if manifest.model.differences(store.model) or manifest.dim != store.dim:
        report.problems.append(
            Problem(str(IndexManifest.path_in(store.path)), "built from another model", fix, "index")
        )
    problem = _coverage_problem(store, manifest.shards, manifest.count, "index")
    if problem is not None:
        report.problems.append(
            Problem(str(IndexManifest.path_in(store.path)), problem, f"sbert index {store.path} --rebuild", "index")
        )
    files = [(folder / manifest.file, manifest)] + [(folder / p.name, p) for p in manifest.parts]
    _verify_files(files, report, fix, "index")
    note = _pending_note(store, manifest.shards, "dense index")
    if note:
        report.notes.append(note)


def _check_keyword_index(store: Store, report: CheckReport) -> None:
    fix = index_fix(store.path)
    path = KeywordManifest.path_in(store.path)
    try:
        manifest = KeywordManifest.load(store.path)
    except InputError as exc:
        report.problems.append(Problem(str(path), _strip_path(str(exc)).split("; rebuild")[0], fix, "keyword"))
        return
    if manifest is None:
        return
    report.indexes.append("keyword index")
    problem = _coverage_problem(store, manifest.shards, manifest.docs, "keyword index")
    if problem is not None:
        report.problems.append(Problem(str(path), problem, f"sbert index {store.path} --rebuild", "keyword"))
    folder = store.path / KEYWORD_DIR / manifest.folder
    _verify_files([(folder / f.name, f) for f in manifest.files], report, fix, "keyword")
    note = _pending_note(store, manifest.shards, "keyword index")
    if note:
        report.notes.append(note)
