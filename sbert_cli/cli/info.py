"""`sbert info STORE`: what a store holds and how its indexes stand, as text or JSON."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import handle_errors


@handle_errors
def info(
    store: Annotated[str, typer.Argument(metavar="STORE", help="Store directory.", show_default=False)],
    output_format: Annotated[
        Literal["text", "json"], typer.Option("--format", help="text for people, json for scripts.")
    ] = "text",
) -> None:
    """Show a store: rows, records, inputs (and which changed on disk), model, shards, size, indexes."""
    from sbert_cli.store.info import store_info

    data = store_info(store)
    if output_format == "json":
        typer.echo(json.dumps(data, indent=1))
        return
    for line in text_lines(data):
        typer.echo(line)


def _index_line(index: dict | None) -> str:
    if index is None:
        return "none (build one with: sbert index STORE)"
    if "kind" not in index:
        return index["state"]
    deleted = f", {index['deleted']:,} deleted ({index['deleted_fraction']:.1%})" if index["deleted"] else ""
    return f"{index['kind']}, {index['rows']:,} rows{deleted}, {index['state']}"


def text_lines(data: dict) -> list[str]:
    def names(key: str) -> str:
        return f" ({', '.join(data[key])})" if data[key] else ""

    keyword = data["keyword_index"]
    lines = [
        f"store:          {data['store']}",
        f"rows:           {data['rows']:,}",
        f"records:        {data['records']:,}",
        f"inputs:         {data['inputs']:,}; missing on disk: {len(data['inputs_missing'])}{names('inputs_missing')}; "
        f"changed on disk: {len(data['inputs_changed'])}{names('inputs_changed')}",
        f"model:          {data['model']} (dim {data['dim']}, {'+'.join(data['pooling'])} pooling, "
        f"{'normalized' if data['normalize'] else 'not normalized'})",
        f"dtype:          {data['dtype']} (stored as {data['storage_dtype']})",
        f"chunking:       {_chunking_line(data['chunking'])}",
        f"shards:         {data['shards']:,}, {data['bytes'] / 1e6:,.1f} MB on disk",
        f"index:          {_index_line(data['index'])}",
        "keyword index:  "
        + (
            "none"
            if keyword is None
            else keyword.get("state")
            if "rows" not in keyword
            else f"{keyword['rows']:,} texts, {keyword['state']}"
        ),
        f"readers:        {data['readers']}",
        f"updated:        {data['updated']} by sbert {data['sbert_version']}",
    ]
    if data["inputs_incomplete"]:
        lines.insert(4, f"incomplete:     {', '.join(data['inputs_incomplete'])} (run the same encode again to finish)")
    return lines


def _chunking_line(chunking: dict) -> str:
    from sbert_cli.encoding.chunk_settings import describe
    from sbert_cli.store.manifest import ChunkingRecord

    return describe(ChunkingRecord(**chunking))
