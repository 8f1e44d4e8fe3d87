"""Bytes -> numbered lines of text: gzip, the user's encoding, the byte-order mark, binary data.

Two paths, one contract (1-based line numbers, each line with its newline): encodings that
write ASCII as ASCII (UTF-8, Latin-1, cp1252, Shift-JIS...) are split on the 0x0A byte first
and decoded line by line, so a decoding error names its line and byte exactly; the others
(UTF-16, UTF-32, EBCDIC, UTF-7) must be decoded before a newline can be found, so they are
decoded in chunks by an incremental decoder and split afterwards.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.stdin import stdin_binary

if TYPE_CHECKING:
    from sbert_cli.inputs.sources import InputSource, ReadOptions

BOM = "\ufeff"
READ_CHUNK = 1 << 16
# What gzip raises on damaged or cut-off data (zlib.error for a bad deflate stream).
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_ASCII_SAMPLE = "\n abcXYZ09+-_:,\"'\t\r"


def described(exc: BaseException) -> str:
    """A library's error text on one line (pyarrow's span several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def shown_names(names: list[str]) -> str:
    """Column names for a message: as they are, or quoted where they hold odd characters."""
    return ", ".join(n if n.isprintable() else repr(n) for n in names)


def check_encoding(encoding: str) -> str:
    """The codec's canonical name; an unknown or non-text codec (rot13, hex) is bad usage."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"--encoding {encoding}: unknown encoding") from None
    if not getattr(info, "_is_text_encoding", True):
        raise InputError(f"--encoding {encoding}: not a text encoding")
    return info.name


@functools.cache
def ascii_compatible(encoding: str) -> bool:
    """Whether the encoding writes ASCII (newline included) byte for byte; a leading BOM is allowed."""
    try:
        encoded = _ASCII_SAMPLE.encode(encoding)
    except (UnicodeError, LookupError):  # idna and the like: decode whole, as the others
        return False
    return encoded.endswith(_ASCII_SAMPLE.encode("ascii")) and len(encoded) - len(_ASCII_SAMPLE) <= 3


def open_binary(source: InputSource) -> BinaryIO:
    try:
        raw: BinaryIO = stdin_binary() if source.path is None else open(source.path, "rb")
    except OSError as exc:
        raise InputError(located(source.name, None, f"cannot open ({exc.strerror})")) from exc
    if source.gzipped:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def decoded_lines(source: InputSource, options: ReadOptions) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline) for line-oriented formats; a BOM is dropped."""
    encoding = check_encoding(options.encoding)
    fh = open_binary(source)
    try:
        yield from (_byte_lines if ascii_compatible(encoding) else _text_lines)(fh, source, options)
    finally:
        if source.path is not None:
            fh.close()


def _stream_error(source: InputSource, lineno: int, exc: Exception) -> InputError:
    """gzip's and the disk's errors, at the line that could not be read."""
    what = "corrupt gzip data" if isinstance(exc, GZIP_ERRORS) else "read error"
    return InputError(located(source.name, lineno, f"{what} ({described(exc)})"))


def _binary_error(source: InputSource, lineno: int, raw: bytes, encoding: str) -> InputError:
    if lineno == 1 and raw.startswith(_UTF16_32_BOMS):
        hint = "it starts with a UTF-16/32 byte-order mark: use --encoding utf-16 (or utf-32)"
        return InputError(located(source.name, 1, f"not {encoding} text; {hint}"))
    return InputError(located(source.name, lineno, "binary data (NUL byte); is this a text file?"))


def _byte_lines(fh: BinaryIO, source: InputSource, options: ReadOptions) -> Iterator[tuple[int, str]]:
    lineno = 0
    try:
        for lineno, raw in enumerate(fh, start=1):  # noqa: B007 - lineno is used after an error too
            if b"\0" in raw:  # no text in an ASCII-compatible encoding holds NUL
                raise _binary_error(source, lineno, raw, options.encoding)
            try:
                line = raw.decode(options.encoding, options.errors)
            except UnicodeDecodeError as exc:
                raise InputError(
                    located(
                        source.name,
                        lineno,
                        f"not valid {options.encoding} (byte {exc.start + 1} of the line); "
                        "use --encoding to name the right one or --errors replace to go on",
                    )
                ) from exc
            yield lineno, (line[1:] if lineno == 1 and line.startswith(BOM) else line)
    except (*GZIP_ERRORS, OSError) as exc:
        raise _stream_error(source, lineno + 1, exc) from exc


def _text_lines(fh: BinaryIO, source: InputSource, options: ReadOptions) -> Iterator[tuple[int, str]]:
    """Decode in chunks, then split on newlines; parts of a line not yet ended wait in `pending`."""
    decoder = codecs.getincrementaldecoder(options.encoding)(options.errors)
    lineno = 0
    pending: list[str] = []
    while True:
        try:
            chunk = fh.read(READ_CHUNK)
        except (*GZIP_ERRORS, OSError) as exc:
            raise _stream_error(source, lineno + 1, exc) from exc
        state = decoder.getstate()
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            line = lineno + 1 + _newlines_before_error(options.encoding, state, exc)
            raise InputError(
                located(
                    source.name,
                    line,
                    f"not valid {options.encoding}; use --encoding to name the right one or --errors replace to go on",
                )
            ) from exc
        except UnicodeError as exc:  # e.g. "UTF-16 stream does not start with BOM"
            raise InputError(
                located(source.name, lineno + 1, f"not valid {options.encoding} ({described(exc)})")
            ) from exc
        parts = text.split("\n")
        for part in parts[:-1]:
            lineno += 1
            line = "".join(pending) + part + "\n"
            pending = []
            if "\0" in line:
                raise _binary_error(source, lineno, b"", options.encoding)
            yield lineno, (line[1:] if lineno == 1 and line.startswith(BOM) else line)
        pending.append(parts[-1])
        if not chunk:
            break
    rest = "".join(pending)
    if rest:
        if "\0" in rest:
            raise _binary_error(source, lineno + 1, b"", options.encoding)
        yield lineno + 1, (rest[1:] if lineno == 0 and rest.startswith(BOM) else rest)


def _newlines_before_error(encoding: str, state: tuple, exc: UnicodeDecodeError) -> int:
    """How many lines the chunk completed before the undecodable byte (the decoder's error offset
    counts from the bytes it held back from the previous chunk, which `exc.object` includes)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        decoder.setstate((b"", state[1]))
        return decoder.decode(exc.object[: exc.start]).count("\n")
    except Exception:  # only a line number is at stake
        return 0
