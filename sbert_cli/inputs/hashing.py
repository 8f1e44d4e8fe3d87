"""A record's content hash: what `encode --sync` compares to find the records an edit changed.

A record is its whole text, its key and its kept-field values; the hash covers all of them, so
the same value sits on every chunk row of a long record (chunking/ copies it onto each row) and a
record is re-encoded exactly when one of them changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sbert_cli.inputs.reader import Record


def _canonical(value: Any) -> Any:
    """Kept-field values as the reader types them and as Parquet gives them back, alike."""
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time()).isoformat()
    return value


def content_hash(text: str, key: str | None, fields: dict | None = None) -> int:
    """64 bits of BLAKE2b over text, key and kept fields, as a signed int64 (the Parquet column)."""
    data = text.encode("utf-8") + (b"\x00" + key.encode("utf-8") if key is not None else b"\x01")
    if fields:
        items = sorted((name, _canonical(value)) for name, value in fields.items() if value is not None)
        data += b"\x02" + json.dumps(items, default=str, ensure_ascii=False).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def record_hash(record: Record) -> int:
    """The hash of a whole record; a chunk row carries its record's (`ChunkRow.record_hash`)."""
    carried = getattr(record, "record_hash", None)
    return carried if carried is not None else content_hash(record.text, record.key, record.fields)
