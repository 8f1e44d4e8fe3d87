"""Planning an encode: per input, skip it, resume it or start it, from what the manifest says.

The manifest is the only memory between runs: an input already complete is skipped, a partial
one continues after its last committed line, a new one gets the next input index.

With `--sync` (`plan_sync`) the given inputs are the whole truth: each is new, unchanged
(same size and mtime, or, after a `touch`, the same content hash), changed, or renamed (a gone
input's content under a new path); inputs of the store not given are removed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sbert_cli.errors import InputError
from sbert_cli.inputs.reader import InputSource
from sbert_cli.store.manifest import InputEntry, StoreManifest

log = logging.getLogger("sbert")


@dataclass
class PlannedInput:
    source: InputSource
    entry: InputEntry
    records: int | None = None  # known after the validation scan (None for stdin)
    only_lines: set[int] | None = None  # --sync of an edited input: encode these records only
    committer: object | None = None  # --sync of an edited input: store/sync.RewriteCommitter


def file_sha256(source: InputSource) -> str | None:
    """The input file's content checksum (what --sync recognizes a touched or moved file by)."""
    if source.path is None:
        return None
    digest = hashlib.sha256()
    with open(source.path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def file_identity(source: InputSource) -> tuple[str | None, int | None, int | None]:
    """(resolved path, size, mtime_ns): how a rerun recognizes an input, and notices a change."""
    if source.path is None:
        return None, None, None
    st = source.path.stat()
    return str(source.path.resolve()), st.st_size, st.st_mtime_ns


def new_entry(index: int, source: InputSource) -> InputEntry:
    path, size, mtime_ns = file_identity(source)
    fmt = source.format + (".gz" if source.gzipped else "")
    entry = InputEntry(index=index, source=source.name, path=path, size=size, mtime_ns=mtime_ns, format=fmt)
    entry.content_sha256 = file_sha256(source)
    return entry


def input_format(source: InputSource) -> str:
    return source.format + (".gz" if source.gzipped else "")


def _resume_or_skip(source: InputSource, entry: InputEntry, say: Callable[[str], None]) -> bool:
    """True to (re)start `entry` from where it stopped, False to skip it as complete."""
    _, size, mtime_ns = file_identity(source)
    changed = (entry.size, entry.mtime_ns) != (size, mtime_ns)
    if entry.complete:
        # One line per input only under -v: a nightly run over a big folder would log them all.
        note = " (it changed since; --sync re-encodes changed inputs)" if changed else ""
        log.debug("%s: already encoded, %d rows; skipping%s", source.name, entry.rows_done, note)
        return False
    if changed:
        raise InputError(
            f"{source.name}: changed since it was partly encoded ({entry.rows_done} rows); "
            "use --force to encode it again from the start"
        )
    return True


def plan_inputs(
    sources: list[InputSource], manifest: StoreManifest, force: bool, say: Callable[[str], None]
) -> list[PlannedInput]:
    """What to encode, in order; new inputs are appended to `manifest.inputs`."""
    by_path = {e.path: e for e in manifest.inputs if e.path}
    next_index = max(manifest.next_input, max((e.index for e in manifest.inputs), default=-1) + 1)
    planned: list[PlannedInput] = []
    seen: set[str] = set()
    for source in sources:
        path = file_identity(source)[0]
        if path is not None:
            if path in seen:
                say(f"{source.name}: named twice; encoding it once")
                continue
            seen.add(path)
        entry = by_path.get(path) if path else None
        if entry is None:
            entry = new_entry(next_index, source)
            next_index += 1
            manifest.inputs.append(entry)
            planned.append(PlannedInput(source, entry))
        elif force or _resume_or_skip(source, entry, say):
            planned.append(PlannedInput(source, entry))
    manifest.next_input = next_index
    return planned


def changed_since(source: InputSource, entry: InputEntry) -> bool:
    """Whether a complete input's file differs from what was encoded (size or mtime)."""
    return (entry.size, entry.mtime_ns) != file_identity(source)[1:]


def reset_entry(manifest: StoreManifest, entry: InputEntry, source: InputSource) -> list[str]:
    """Forget an input's shards (for --force); returns their files, deleted after the manifest."""
    files = [s.file for s in manifest.shards if s.input == entry.index]
    manifest.shards = [s for s in manifest.shards if s.input != entry.index]
    index = entry.index
    if entry.next_local:
        # --sync gave some of its records ids other than their lines: line-based ids now could
        # name other texts than before, so the input starts over under a new index (new ids).
        index = max(manifest.next_input, max(e.index for e in manifest.inputs) + 1)
        manifest.next_input = index + 1
    fresh = new_entry(index, source)
    for name in fresh.__dataclass_fields__:
        setattr(entry, name, getattr(fresh, name))
    return files


@dataclass
class SyncPlan:
    """What `--sync` does with each input: (source, the store's entry) pairs, and new sources."""

    new: list[InputSource] = field(default_factory=list)
    unchanged: list[tuple[InputSource, InputEntry]] = field(default_factory=list)
    touched: list[tuple[InputSource, InputEntry]] = field(default_factory=list)  # same content, new mtime
    resumed: list[tuple[InputSource, InputEntry]] = field(default_factory=list)  # partly encoded, unchanged
    changed: list[tuple[InputSource, InputEntry]] = field(default_factory=list)
    renamed: list[tuple[InputSource, InputEntry]] = field(default_factory=list)  # entry: the old path's
    removed: list[InputEntry] = field(default_factory=list)
    hashes: dict[str, str | None] = field(default_factory=dict)  # source name -> content sha256, when read


@dataclass
class SyncCounts:
    new: int = 0
    changed: int = 0
    reencoded: int = 0  # records of changed inputs that went through the model
    removed: int = 0
    renamed: int = 0
    unchanged: int = 0

    def line(self) -> str:
        return (
            f"+{self.new} new, ~{self.changed} changed ({self.reencoded} records re-encoded), "
            f"-{self.removed} removed, >{self.renamed} renamed, {self.unchanged} unchanged"
        )


def plan_sync(sources: list[InputSource], manifest: StoreManifest) -> SyncPlan:
    """Classify every given input against the store; inputs the store has but not given are removed."""
    plan = SyncPlan()
    by_path = {e.path: e for e in manifest.inputs if e.path}
    seen: set[str] = set()
    matched: set[int] = set()
    unmatched: list[InputSource] = []
    for source in sources:
        if source.is_stdin:
            raise InputError("-: --sync follows files and folders; standard input has no name to follow")
        path = file_identity(source)[0]
        if path in seen:
            continue
        seen.add(path)
        entry = by_path.get(path)
        if entry is None or entry.format != input_format(source):
            unmatched.append(source)
            continue
        matched.add(entry.index)
        _classify(plan, source, entry)
    gone = [e for e in manifest.inputs if e.index not in matched]
    by_hash: dict[str, list[InputEntry]] = {}
    for entry in gone:
        if entry.complete and entry.content_sha256:
            by_hash.setdefault(entry.content_sha256, []).append(entry)
    for source in unmatched:
        sha = plan.hashes[source.name] = file_sha256(source)
        candidates = [e for e in by_hash.get(sha or "", []) if e.format == input_format(source)]
        if candidates:
            entry = candidates[0]
            by_hash[sha].remove(entry)
            plan.renamed.append((source, entry))
            matched.add(entry.index)
        else:
            plan.new.append(source)
    plan.removed = [e for e in gone if e.index not in matched]
    return plan


def _classify(plan: SyncPlan, source: InputSource, entry: InputEntry) -> None:
    """Unchanged (size and mtime equal), touched (content equal), or changed."""
    if not changed_since(source, entry):
        (plan.unchanged if entry.complete else plan.resumed).append((source, entry))
        return
    sha = plan.hashes[source.name] = file_sha256(source)
    if sha == entry.content_sha256 and entry.complete:
        plan.touched.append((source, entry))
    else:
        plan.changed.append((source, entry))
