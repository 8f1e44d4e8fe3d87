"""Parquet inputs: opening (gzip, stdin), choosing columns, and typed values.

Fields are typed as the format promises, the same in every format: the text is a string column
(a null is a blank row), an id is a string or an integer; anything else (binary, lists,
numbers as text) is refused by name and type, never turned into `b'ok'` or `[1.0]`. Parquet
strings are UTF-8 by definition, but a writer can break that: a bad value names its row.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.decoding import GZIP_ERRORS, described, shown_names
from sbert_cli.inputs.stdin import stdin_binary

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sbert_cli.inputs.sources import InputSource

# What pyarrow and the Parquet/Thrift decoders raise on damaged files (besides ArrowException).
PARQUET_ERRORS = (OSError, ValueError, IndexError, KeyError, TypeError, EOFError, OverflowError, MemoryError)


def open_parquet(source: InputSource) -> pq.ParquetFile:
    """The whole file is needed (its footer comes last): stdin and .gz are read into memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if source.path is None:
            raw = stdin_binary().read()
            data = pa.BufferReader(gzip.decompress(raw) if source.gzipped else raw)
        else:
            data = source.path if not source.gzipped else pa.BufferReader(gzip.decompress(source.path.read_bytes()))
    except GZIP_ERRORS as exc:
        raise InputError(located(source.name, None, f"corrupt gzip data ({described(exc)})")) from exc
    except OSError as exc:
        raise InputError(located(source.name, None, f"cannot read ({described(exc)})")) from exc
    try:  # pages written with checksums are checked: damage is an error, never text
        return pq.ParquetFile(data, page_checksum_verification=True)
    except (pa.ArrowException, *PARQUET_ERRORS) as exc:
        raise InputError(located(source.name, None, f"not a readable Parquet file ({described(exc)})")) from exc


def resolve_columns(source: InputSource, pf: pq.ParquetFile, wanted: list[str], also: Sequence[str] = ()) -> list[str]:
    """Column names for names or 0-based indexes, each checked for the type its role needs;
    `also` (kept fields) are only checked for being named once."""
    schema = pf.schema_arrow
    names = schema.names
    for name in also:
        if names.count(name) > 1:
            raise InputError(
                located(source.name, None, f"column {name!r} appears {names.count(name)} times; rename one")
            )
    resolved = []
    for role, name in zip(("text", "id"), wanted, strict=False):
        if name.isdigit() and int(name) < len(names):
            name = names[int(name)]
        if name not in names:
            raise InputError(located(source.name, None, f"no column {name!r} (columns: {shown_names(names)})"))
        if names.count(name) > 1:
            raise InputError(
                located(source.name, None, f"column {name!r} appears {names.count(name)} times; rename one")
            )
        _check_type(source, name, schema.field(name).type, role)
        resolved.append(name)
    return resolved


def _check_type(source: InputSource, name: str, arrow_type: pa.DataType, role: str) -> None:
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    stringy = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
    stringy = stringy or getattr(pa.types, "is_string_view", lambda _: False)(value_type)
    if stringy or pa.types.is_null(value_type):
        return
    if role == "id" and pa.types.is_integer(value_type):
        return
    wanted = "a string column" if role == "text" else "a string or integer column"
    raise InputError(located(source.name, None, f"column {name!r} is {arrow_type}, not {wanted}"))


def column_values(source: InputSource, array: pa.Array, name: str, first_row: int, errors: str) -> list:
    """A batch's values as Python objects; invalid UTF-8 names its row, or is replaced under
    --errors replace/ignore."""
    try:
        return array.to_pylist()
    except UnicodeDecodeError:
        pass
    values = []
    for i in range(len(array)):
        scalar = array[i]
        try:
            values.append(scalar.as_py())
        except UnicodeDecodeError as exc:
            if errors == "strict":
                raise InputError(
                    located(
                        source.name,
                        first_row + i,
                        f"column {name!r}: not valid UTF-8 (byte {exc.start + 1} of the value); "
                        "--errors replace to go on",
                    )
                ) from exc
            values.append(_raw_bytes(scalar).decode("utf-8", errors))
    return values


def _raw_bytes(scalar) -> bytes:
    value = getattr(scalar, "value", None)  # a dictionary scalar holds its string scalar
    return (value if value is not None and hasattr(value, "as_buffer") else scalar).as_buffer().to_pybytes()
