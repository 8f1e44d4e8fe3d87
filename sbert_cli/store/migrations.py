"""Lifting older manifests to the current format version, one version at a time (manifest.py's
`_parse` applies them in order). Each fills every field the next version added with the value
that describes what the older sbert actually wrote."""

from __future__ import annotations


def store_v1(data: dict) -> dict:
    # Version 1 did not record which sbert wrote it.
    return {**data, "version": 2, "sbert_version": data.get("sbert_version")}


def store_v2(data: dict) -> dict:
    # Version 2 stores truncated every record at max_seq_length, one row per record, and their
    # shards have no chunk/start/end columns, no kept fields and no record_hash column; they know
    # no file content hash (--sync hashes the file once), and row ids are line-based (one per
    # record), so next_local 0 / next_input 0 mean "above every id the store holds".
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    size = model.get("max_seq_length", 0)
    inputs = data.get("inputs") if isinstance(data.get("inputs"), list) else []
    entry_defaults = {"id_offset": 0, "read": None, "content_sha256": None, "next_local": 0}
    return {
        **data,
        "version": 3,
        "chunking": {"mode": "truncate", "size": size if isinstance(size, int) else 0, "overlap": 0},
        "has_chunks": False,
        "kept_fields": [],
        "has_record_hash": False,
        "next_input": data.get("next_input", 0),
        "inputs": [
            {**entry_defaults, "records_done": e.get("rows_done", 0), **e} if isinstance(e, dict) else e for e in inputs
        ],
    }


def index_v1(data: dict) -> dict:
    # Version 1 indexes were all hnswlib graphs of the full-precision vectors, one file each.
    return {**data, "version": 2, "quantize": "none", "parts": [], "calibration_rows": 0}
