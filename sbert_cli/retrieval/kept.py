"""Hit rows kept in memory, for a searcher that lives long (`sbert serve`).

Every hit shows its row's text, source, line, key, chunk columns and kept fields. A one-off
`sbert search` reads them from the shards by id (`Store.fetch`: the row groups holding them);
a server answering many searches a second cannot pay a Parquet read per query (on a 100k-row
store that was 77% of a search's time). `KeptRows` holds those columns (never the embeddings:
cosines come from the index, `Index.vectors_of`) as one Arrow table per shard, found by row id:

- when they fit `budget` bytes, every shard's columns are read once, verified as every first
  read of a shard is (its whole-file checksum, store/integrity.py);
- otherwise row groups are read when a hit needs them, verified by their page checksums (or
  the whole file's, once, for older shards), and the most recently used kept up to `budget`.

`KeptRows` belongs to one opened `Store` (one committed manifest). A server opens a new store
when the store changes and builds a new `KeptRows` for it, reusing the tables of shards both
states list (same file, same checksum): what a search sees is swapped with the store, at once.
`keep(store, rows)` registers it; `records.fetch_rows` then answers from it.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sbert_cli.store.manifest import ShardInfo
from sbert_cli.store.store import Store, arrow_ids

NOT_KEPT = ("embedding", "record_hash")  # the vectors live in the index; the hash is for --sync
DEFAULT_BUDGET = 1 << 30

_KEPT: weakref.WeakKeyDictionary[Store, KeptRows] = weakref.WeakKeyDictionary()


def keep(store: Store, rows: KeptRows) -> None:
    """Answer `records.fetch_rows(store, ...)` from `rows` from now on."""
    _KEPT[store] = rows


def kept_for(store: Store) -> KeptRows | None:
    return _KEPT.get(store)


def _shard_key(shard: ShardInfo) -> tuple:
    return shard.file, getattr(shard, "xxh3", None) or shard.sha256


@dataclass(frozen=True)
class _Groups:
    """A shard's row groups by id range, from its footer (min and max id of each)."""

    lows: np.ndarray
    highs: np.ndarray


class KeptRows:
    def __init__(self, store: Store, budget: int = DEFAULT_BUDGET, previous: KeptRows | None = None) -> None:
        self.store = store
        self.budget = budget
        self.columns = tuple(c for c in store.columns() if c not in NOT_KEPT)
        reuse = previous._tables if previous is not None and previous.columns == self.columns else {}
        self._tables: dict[tuple, object] = {}  # shard key -> its columns (all in memory)
        self._all = None  # in-memory mode: every shard's columns, one table (shards in order)
        self._groups: dict[str, _Groups] = {}  # row-group mode: shard file -> its groups' id ranges
        self._lru: OrderedDict[tuple[str, int], object] = OrderedDict()
        self._lru_bytes = 0
        self.in_memory = self._load_all(reuse)
        self._build_lookup()

    def for_store(self, store: Store) -> KeptRows:
        """These rows for another opening of the store: themselves where it lists the same shards
        (the same files, the same checksums), else rebuilt for it (reusing the shards in common)."""
        if [_shard_key(s) for s in store.shards] != [_shard_key(s) for s in self.store.shards]:
            return KeptRows(store, self.budget, self)
        self.store = store
        return self

    @property
    def nbytes(self) -> int:
        if not self.in_memory:
            return self._lru_bytes
        return 0 if self._all is None else self._all.nbytes

    def _load_all(self, reuse: dict) -> bool:
        """Every shard's columns, while they fit the budget (False, nothing kept, when not), as one
        table of one chunk (`take` is then one gather); each shard's part stays a view of it."""
        import pyarrow as pa

        total, tables = 0, []
        for shard in self.store.shards:
            # Verified (whole file) when first read; a shard the previous state kept is not read again.
            table = reuse.get(_shard_key(shard))
            if table is None:
                table = self.store.read_shard(shard, list(self.columns))
            tables.append(table)
            total += table.nbytes
            if total > self.budget:
                return False
        if not tables:
            return True  # nothing to keep: every fetch finds nothing
        self._all = pa.concat_tables(tables).combine_chunks()
        start = 0
        for shard, table in zip(self.store.shards, tables, strict=True):
            self._tables[_shard_key(shard)] = self._all.slice(start, table.num_rows)
            start += table.num_rows
        return True

    def _build_lookup(self) -> None:
        """Sorted row ids with the place of each in the kept table (in-memory mode)."""
        if self._all is None:
            self._ids = self._places = np.empty(0, np.int64)
            self._lines = np.empty(0, np.int64) if "line" in self.columns else None
            return
        ids = self._all.column("id").to_numpy()
        order = np.argsort(ids, kind="stable")
        self._ids, self._places = ids[order], order
        self._lines = self._all.column("line").to_numpy() if "line" in self.columns else None

    def fetch(self, ids: Sequence[int], columns: Sequence[str]) -> dict[int, dict]:
        """Rows by id, as `Store.fetch` returns them: {id: {"id": id, column: value, ...}} with
        whichever of `columns` the store has; ids not in the store are left out."""
        wanted = [c for c in columns if c in self.columns and c != "id"]
        unique = np.unique(np.asarray([int(i) for i in ids], dtype=np.int64))
        if self.in_memory:
            return self._fetch_kept(unique, wanted)
        return self._fetch_groups(unique, wanted)

    def lines_of(self, ids: np.ndarray) -> np.ndarray | None:
        """Each row's input line (-1 for an id not in the store), straight from memory; None where
        the rows are not all kept or have no line column (`fetch` then)."""
        if not self.in_memory or self._lines is None:
            return None
        found, places = self._places_of(ids)
        lines = np.full(len(ids), -1, dtype=np.int64)
        lines[found] = self._lines[places[found]]
        return lines

    def _places_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The last equal id: ids are unique in a committed store, the last shard listed wins if not.
        at = np.searchsorted(self._ids, ids, side="right") - 1
        if not len(self._ids):
            return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
        found = (at >= 0) & (self._ids[np.maximum(at, 0)] == ids)
        return found, self._places[np.maximum(at, 0)]

    def _fetch_kept(self, ids: np.ndarray, columns: list[str]) -> dict[int, dict]:
        found, places = self._places_of(ids)
        if not found.any():
            return {}
        rows = self._all.select(["id", *columns]).take(places[found]).to_pylist()
        return {row["id"]: row for row in rows}

    # -- row-group mode: stores whose columns do not fit the budget ------------------------------
    def _fetch_groups(self, ids: np.ndarray, columns: list[str]) -> dict[int, dict]:
        import pyarrow.compute as pc

        out: dict[int, dict] = {}
        for shard in self.store.shards:
            inside = ids[(ids >= shard.id_min) & (ids <= shard.id_max)]
            if not len(inside):
                continue
            groups = self._groups_of(shard)
            for group in self._groups_holding(groups, inside):
                table = self._group(shard, group).select(["id", *columns])
                table = table.filter(pc.is_in(table.column("id"), value_set=arrow_ids(inside)))
                for row in table.to_pylist():
                    out[row["id"]] = row
        return out

    @staticmethod
    def _groups_holding(groups: _Groups, ids: np.ndarray) -> list[int]:
        holds = (groups.lows[:, None] <= ids[None, :]) & (groups.highs[:, None] >= ids[None, :])
        return np.flatnonzero(holds.any(axis=1)).tolist()

    def _groups_of(self, shard: ShardInfo) -> _Groups:
        if shard.file not in self._groups:
            self._groups[shard.file] = _Groups(*self.store.row_group_id_ranges(shard))
        return self._groups[shard.file]

    def _group(self, shard: ShardInfo, group: int):
        """One row group's kept columns (verified by `Store.read_row_group`), the LRU kept to budget."""
        key = (shard.file, group)
        table = self._lru.get(key)
        if table is not None:
            self._lru.move_to_end(key)
            return table
        table = self.store.read_row_group(shard, group, list(self.columns))
        self._lru[key] = table
        self._lru_bytes += table.nbytes
        while self._lru_bytes > self.budget and len(self._lru) > 1:
            _, dropped = self._lru.popitem(last=False)
            self._lru_bytes -= dropped.nbytes
        return table
