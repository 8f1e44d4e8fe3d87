"""Planning an encode: per input, skip it, resume it or start it, from what the manifest says.

The manifest is the only memory between runs: an input already complete is skipped, a partial
one continues after its last committed line, a new one gets the next input index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sbert_cli.errors import InputError
from sbert_cli.inputs.reader import InputSource
from sbert_cli.store.manifest import InputEntry, StoreManifest


@dataclass
class PlannedInput:
    source: InputSource
    entry: InputEntry
    records: int | None = None  # known after the validation scan (None for stdin)


def file_identity(source: InputSource) -> tuple[str | None, int | None, int | None]:
    """(resolved path, size, mtime_ns): how a rerun recognizes an input, and notices a change."""
    if source.path is None:
        return None, None, None
    st = source.path.stat()
    return str(source.path.resolve()), st.st_size, st.st_mtime_ns


def new_entry(index: int, source: InputSource) -> InputEntry:
    path, size, mtime_ns = file_identity(source)
    fmt = source.format + (".gz" if source.gzipped else "")
    return InputEntry(index=index, source=source.name, path=path, size=size, mtime_ns=mtime_ns, format=fmt)


def _resume_or_skip(source: InputSource, entry: InputEntry, say: Callable[[str], None]) -> bool:
    """True to (re)start `entry` from where it stopped, False to skip it as complete."""
    _, size, mtime_ns = file_identity(source)
    changed = (entry.size, entry.mtime_ns) != (size, mtime_ns)
    if entry.complete:
        note = " (it changed since; --force re-encodes it)" if changed else " (--force re-encodes it)"
        say(f"{source.name}: already encoded, {entry.rows_done} rows; skipping{note}")
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
    next_index = max((e.index for e in manifest.inputs), default=-1) + 1
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
    return planned


def reset_entry(manifest: StoreManifest, entry: InputEntry, source: InputSource) -> list[str]:
    """Forget an input's shards (for --force); returns their files, deleted after the manifest."""
    files = [s.file for s in manifest.shards if s.input == entry.index]
    manifest.shards = [s for s in manifest.shards if s.input != entry.index]
    fresh = new_entry(entry.index, source)
    for name in fresh.__dataclass_fields__:
        setattr(entry, name, getattr(fresh, name))
    return files
