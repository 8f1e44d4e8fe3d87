"""`--where`: which store rows a search may return, by a SQL boolean expression over the stored
columns, evaluated by DuckDB reading the store's Parquet shards directly.

The expression is parsed as one SQL expression (`duckdb.SQLExpression`: a second statement, a
semicolon outside a string or anything that is not an expression is a parse error), and runs in
an in-memory DuckDB whose file access is limited to the store's own shards and then locked, so
neither a table function (`read_csv('/etc/passwd')`) nor a setting can reach another file. The
columns it sees are the shards' own except the vectors: `id`, `text`, `source`, `line`, `key`,
and, in stores that have them, `chunk`, `start`, `end` and the kept fields.

Filter first, then rank (retrieval/search.py): the matching row ids are computed once per
search; the dense index then only returns matching rows (hnswlib's filter callback for broad
predicates, exact search over the matching rows' vectors for narrow ones: `EXACT_BELOW`), and
the keyword index masks the other documents out of BM25's sums.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.manifest import ShardInfo
from sbert_cli.store.store import Store, embeddings_to_numpy

# A predicate matching at most this share of the store's rows is searched exactly over the
# matching rows' vectors; broader ones through the index with hnswlib's filter. Measured with
# benchmarks/bench_filter.py (benchmarks/README.md): exact over the matching rows costs time in
# proportion to their number, the filtered graph search in proportion to 1 / share; they cost
# the same near 5% (100k rows: 143 against 144 ms; 20k rows: 60 against 45 ms), and at 0.5%
# exact is 40x faster (16 against 631 ms). 3% keeps to the cheaper side of both.
EXACT_BELOW = 0.03
HIDDEN_COLUMNS = ("embedding",)
_STRING = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


@dataclass(frozen=True)
class RowFilter:
    """The rows a `--where` expression keeps: their ids (sorted) out of the store's rows."""

    expression: str
    ids: np.ndarray
    rows: int  # rows in the store

    @property
    def share(self) -> float:
        return len(self.ids) / self.rows if self.rows else 0.0

    @property
    def narrow(self) -> bool:
        return self.share <= EXACT_BELOW

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` the filter keeps."""
        return np.isin(ids, self.ids)

    @cached_property
    def contains(self):
        """A predicate on one row id, for hnswlib's filter callback (made once per filter)."""
        return set(self.ids.tolist()).__contains__


def _connect(store: Store):
    """An in-memory DuckDB that can read the store's shards and nothing else, as view `rows`."""
    import duckdb

    files = [str(store.shard_path(s).resolve()) for s in store.shards]
    listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    con = duckdb.connect(":memory:")
    con.execute(f"SET allowed_paths = {listed}")  # SET takes no prepared parameters
    for setting in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions"):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")
    con.execute(f"CREATE VIEW rows AS SELECT * EXCLUDE (embedding) FROM read_parquet({listed}, union_by_name = true)")
    return con


def _parse(expression: str):
    import duckdb

    if not expression.strip():
        raise InputError("--where: the expression is empty")
    if ";" in _STRING.sub("", expression):
        raise InputError(f"--where {expression!r}: one SQL expression only (no ';')")
    try:
        return duckdb.SQLExpression(expression)
    except duckdb.Error as exc:
        raise InputError(f"--where {expression!r}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[0].split())


def filter_rows(store: Store, expression: str) -> RowFilter:
    """The ids of the store's rows for which `expression` is true (NULL counts as false)."""
    import duckdb

    parsed = _parse(expression)
    if not store.shards:
        return RowFilter(expression, np.empty(0, np.int64), 0)
    con = _connect(store)
    try:
        table = con.table("rows")
        columns = ", ".join(table.columns)
        try:
            found = table.filter(parsed).project("id").fetchnumpy()["id"]  # sorted below: numpy is faster
        except (duckdb.ParserException, duckdb.BinderException, duckdb.ConversionException) as exc:
            raise InputError(f"--where {expression!r}: {_first_line(exc)} (columns: {columns})") from exc
        except duckdb.PermissionException as exc:
            raise InputError(f"--where {expression!r}: reads outside the store: {_first_line(exc)}") from exc
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.IOException):
                raise SbertError(f"{store.path}: could not read the shards ({_first_line(exc)})") from exc
            raise InputError(f"--where {expression!r}: {_first_line(exc)}") from exc
    finally:
        con.close()
    return RowFilter(expression, np.sort(np.asarray(found, dtype=np.int64)), store.rows)


def matching_vectors(
    store: Store, ids: np.ndarray, shards: Sequence[ShardInfo] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 vectors) of the given rows (sorted ids), read from the store's shards (or
    the given ones) by id: only shards whose id range holds some of them are read."""
    found_ids, vectors = [], []
    for shard in store.shards if shards is None else shards:
        inside = ids[(ids >= shard.id_min) & (ids <= shard.id_max)]
        if not len(inside):
            continue
        table = store.read_rows(shard, ["id", "embedding"], inside)  # those rows, verified (store/integrity.py)
        if table.num_rows:
            found_ids.append(table.column("id").to_numpy())
            vectors.append(embeddings_to_numpy(table.column("embedding"), store.dim))
    if not found_ids:
        return np.empty(0, np.int64), np.empty((0, store.dim), np.float32)
    return np.concatenate(found_ids).astype(np.int64), np.concatenate(vectors)
