"""What the command line's INPUT... names: files, the files inside directories, or stdin."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from sbert_cli.errors import InputError

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
STDIN = "-"
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass
class ReadOptions:
    format: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    text_column: str | None = None
    header: bool | None = None
    encoding: str = "utf-8"
    errors: str = "strict"
    keep_fields: tuple[str, ...] = ()  # stored as typed columns (inputs/fields.py)


@dataclass(frozen=True)
class InputSource:
    """One input as the user named it: a file path, or `-` for standard input."""

    name: str  # what messages and the `source` column show
    path: Path | None  # None for stdin
    format: str
    gzipped: bool

    @property
    def is_stdin(self) -> bool:
        return self.path is None


def detect_format(path: str, forced: str | None) -> tuple[str, bool]:
    lower = path.lower()
    gzipped = lower.endswith(".gz")
    if gzipped:
        lower = lower[:-3]
    if forced:
        if forced not in FORMATS:
            raise InputError(f"--format {forced}: choose from {', '.join(FORMATS)}")
        return forced, gzipped
    return _EXTENSIONS.get(Path(lower).suffix, "txt"), gzipped


def _known_extension(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix in _EXTENSIONS


def file_kind(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISLNK(mode):
        return "a broken symbolic link" if not path.exists() else "a symbolic link to something not a file"
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _directory_members(path: Path, given: str, glob: str | None) -> list[Path]:
    """The files a directory input stands for: those with a known extension, or matching --glob.

    A FIFO, socket, device or broken link among them is refused, not skipped: skipping would
    encode a corpus short of what the user put there without a word, and reading a FIFO would
    wait for a writer (it can only be read once, and every input is read twice: checked in full
    before the store is touched, then encoded). Names that would not be read anyway (no known
    extension, not matching --glob) are ignored, whatever they are.
    """
    candidates = path.glob(glob) if glob else path.rglob("*")
    members = []
    for p in sorted(candidates):
        if p.name.startswith(".") or p.is_dir() or not (glob or _known_extension(p)):
            continue
        if not p.is_file():
            raise InputError(
                f"{p}: {file_kind(p)}, not a regular file; directory inputs read regular files only "
                "(move it out, or choose the files with --glob)"
            )
        members.append(p)
    if not members:
        what = f"matching {glob!r}" if glob else "with a known extension (.txt, .jsonl, .csv, .tsv, .parquet)"
        raise InputError(f"{given}: directory has no files {what}")
    return members


def expand_inputs(inputs: list[str], glob: str | None = None, forced_format: str | None = None) -> list[InputSource]:
    """Turn the command line's INPUT... into sources: files, directory members, or stdin."""
    if not inputs:
        raise InputError("no input given (name files or directories, or - for stdin)")
    sources: list[InputSource] = []
    for given in inputs:
        if given == STDIN:
            fmt, gz = detect_format("stdin.txt", forced_format)
            sources.append(InputSource("<stdin>", None, fmt, gz))
            continue
        path = Path(given)
        if path.is_dir():
            for member in _directory_members(path, given, glob):
                fmt, gz = detect_format(str(member), forced_format)
                sources.append(InputSource(str(member), member, fmt, gz))
        elif path.is_file():
            fmt, gz = detect_format(given, forced_format)
            sources.append(InputSource(given, path, fmt, gz))
        elif path.exists() or path.is_symlink():
            hint = " (pipe it to stdin instead: ... | sbert encode -)" if stat.S_ISFIFO(_mode(path)) else ""
            raise InputError(f"{given}: {file_kind(path)}, not a regular file{hint}")
        else:
            raise InputError(f"{given}: no such file or directory")
    return sources


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0
