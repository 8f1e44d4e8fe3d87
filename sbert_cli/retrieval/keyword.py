"""The keyword (BM25) index of a store's texts, kept in the store beside the dense index.

    STORE/keyword/keyword.json     commit point: what it covers and how it was built
    STORE/keyword/bm25-NNNNNN/     one generation: bm25s's arrays and vocabulary, and ids.npy (the
                                   store row id of each BM25 document, in document order)

Library: bm25s. It implements Lucene's BM25 (the scoring of Elasticsearch and OpenSearch) as a
sparse matrix of precomputed term scores in numpy: indexing runs at ~7,000 book paragraphs/s on
this 2-core machine, a query is a sparse column sum, a saved index loads memory-mapped, and it
needs nothing but numpy. PyStemmer supplies the Snowball English stemmer, so "whales" finds
"whale". rank-bm25 is pure Python and scores every document for every query; tantivy (Rust)
and pyserini (Java) are search engines with their own on-disk formats and commit protocols,
which would sit outside the store's atomic commits and checksums.

Why adding shards rebuilds: a BM25 score depends on corpus-wide statistics (each term's
document frequency, the average document length), so an index of the old shards plus a segment
of the new ones would score differently from one built at once, unless every segment were
rescored with merged statistics. bm25s bakes those statistics into its matrix and has no
incremental add. So when shards are added (or re-encoded), `sbert index` rebuilds the keyword
index from all texts: its scores are then exactly a from-scratch build's, by construction. Per
row, a rebuild is ~70x cheaper than encoding (~7,000 texts/s against ~100 here): a store of 100k
rows rebuilds it in ~15 s, and the rebuild takes as long as encoding the 20k-row shard that
caused it (~200 s) only once the store passes ~1.4M rows. Past that, per-segment indexes scored
with merged corpus statistics would be the next step.

Shards encoded after the last build are not in the keyword index until `sbert index` runs
again; search says so, and dense search still covers them.

Each build writes a new generation folder (each file committed through `atomic_path`), then
replaces keyword.json, then deletes older generations: a crash leaves the previous index usable.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import ProgressUpdate, Reporter
from sbert_cli.retrieval.graph import check_index_file, gone_inputs, shard_change, uncovered_shards
from sbert_cli.retrieval.live import without_gone
from sbert_cli.store.atomic import atomic_path, fsync_dir, temp_path_for
from sbert_cli.store.integrity import DamagedFileError, check_written, index_fix
from sbert_cli.store.manifest import (
    KEYWORD_DIR,
    KEYWORD_MANIFEST,
    CoveredShard,
    IndexFile,
    KeywordManifest,
    TokenizerRecord,
)
from sbert_cli.store.store import Store

log = logging.getLogger("sbert")

# Lucene's BM25 with Lucene's (and Elasticsearch's) defaults, which the benchmark did not tune:
# tuning on the evaluation set would only flatter it.
METHOD = "lucene"
K1 = 1.2
B = 0.75
TOKENIZER = TokenizerRecord(lower=True, pattern=r"(?u)\b\w\w+\b", stopwords="en", stemmer="english")
IDS_FILE = "ids.npy"
TOKENIZE_ROWS = 8192  # texts tokenized at a time: bounds the strings held at once


def keyword_dir(store_path: Path) -> Path:
    return Path(store_path) / KEYWORD_DIR


def _bm25s():
    import bm25s

    # bm25s sets its logger to DEBUG on import and logs each build step, which the CLI's logging
    # would print: sbert reports what it did itself.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def make_tokenizer(record: TokenizerRecord = TOKENIZER):
    from bm25s.tokenization import Tokenizer

    stemmer = None
    if record.stemmer:
        import Stemmer

        stemmer = Stemmer.Stemmer(record.stemmer).stemWord
    return Tokenizer(lower=record.lower, splitter=record.pattern, stopwords=record.stopwords, stemmer=stemmer)


@dataclass
class KeywordSummary:
    path: str
    docs: int = 0
    added: int = 0  # texts from shards the previous keyword index did not hold
    built: bool = False
    reason: str | None = None  # why the whole index was rebuilt, beyond new shards
    skipped: str | None = None  # why the store has no keyword index
    elapsed: float = 0.0


def _why_rebuild(store: Store, old: KeywordManifest, rebuild: bool) -> str | None:
    """Why `old` must be replaced even if no shard was added (None: it is sound)."""
    if rebuild:
        return "asked with --rebuild"
    reason = shard_change(store, old.shards)
    if reason is None and (old.tokenizer, old.method, old.k1, old.b) != (TOKENIZER, METHOD, K1, B):
        reason = "it was built with other BM25 settings"
    if reason is None:
        try:
            for part in old.files:
                check_index_file(keyword_dir(store.path) / old.folder / part.name, part, store.path)
        except (InputError, DamagedFileError) as exc:
            reason = str(exc).split("; rebuild")[0]
    return reason


def _read_old(store: Store, reporter: Reporter) -> KeywordManifest | None:
    try:
        return KeywordManifest.load(store.path)
    except InputError as exc:
        reporter.message(f"rebuilding the keyword index: {str(exc).split('; rebuild')[0]}")
        return None


def build_keyword_index(store: Store, *, rebuild: bool, reporter: Reporter) -> KeywordSummary:
    """Bring the store's BM25 index up to date with its shards (call under the store lock)."""
    summary = KeywordSummary(str(keyword_dir(store.path)))
    if not store.has_text:
        summary.skipped = "the store was encoded with --no-text, so it has no texts to index by keyword"
        return summary
    old = _read_old(store, reporter)
    reason = _why_rebuild(store, old, rebuild) if old is not None else None
    new_shards = uncovered_shards(store, old if reason is None else None)
    summary.docs = old.docs if old is not None else 0
    if old is not None and reason is None and not new_shards:
        return summary
    if reason is not None:
        reporter.message(f"rebuilding the keyword index: {reason}")
    started = time.perf_counter()
    retriever, ids = _index_texts(store, reporter)
    _commit(store, retriever, ids, old)
    summary.docs, summary.built, summary.reason = len(ids), True, reason
    summary.added = sum(s.rows for s in new_shards)
    summary.elapsed = time.perf_counter() - started
    return summary


def _index_texts(store: Store, reporter: Reporter):
    """A bm25s index of every text in the store, in shard order, and the row id of each."""
    bm25s = _bm25s()
    tokenizer = make_tokenizer()
    tokens: list[list[int]] = []
    ids: list[np.ndarray] = []
    started = time.perf_counter()
    total = store.rows
    for shard in store.shards:
        table = store.read_shard(shard, ["id", "text"])
        texts = [t or "" for t in table.column("text").to_pylist()]
        for start in range(0, len(texts), TOKENIZE_ROWS):
            chunk = texts[start : start + TOKENIZE_ROWS]
            tokens += tokenizer.tokenize(chunk, update_vocab=True, return_as="ids", show_progress=False)
        ids.append(table.column("id").to_numpy())
        reporter.progress(ProgressUpdate("keyword index", len(tokens), total, time.perf_counter() - started))
    retriever = bm25s.BM25(k1=K1, b=B, method=METHOD)
    retriever.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=tokenizer.get_vocab_dict()), show_progress=False)
    reporter.progress(ProgressUpdate("keyword index", len(tokens), total, time.perf_counter() - started, final=True))
    return retriever, np.concatenate(ids).astype(np.int64)


def _commit(store: Store, retriever, ids: np.ndarray, old: KeywordManifest | None) -> KeywordManifest:
    """Write a new generation folder file by file, then point keyword.json at it, then drop the rest."""
    bm25s = _bm25s()
    folder = keyword_dir(store.path)
    folder.mkdir(exist_ok=True)
    generation = (old.generation + 1) if old else 1
    while (folder / f"bm25-{generation:06d}").exists():
        generation += 1  # left by a crashed build: never reuse a name something may point at
    name = f"bm25-{generation:06d}"
    staging = temp_path_for(folder / name)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        retriever.save(str(staging), show_progress=False)
        with open(staging / IDS_FILE, "wb") as fh:
            np.save(fh, ids)
        # bm25s's files are committed only once they load back whole (a full disk cuts them short).
        _load_arrays(staging, len(ids), len(retriever.vocab_dict), store.path)
    except (OSError, DamagedFileError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        detail = exc.strerror if isinstance(exc, OSError) else "it does not load back whole"
        raise SbertError(
            f"{folder / name}: the keyword index could not be written ({detail}); nothing was committed, "
            "the previous keyword index stays in use"
        ) from exc
    target = folder / name
    target.mkdir()
    files = []
    for src in sorted(staging.iterdir()):
        with atomic_path(target / src.name) as tmp:
            os.replace(src, tmp)
            digest = check_written(tmp, target / src.name)
        files.append(IndexFile(src.name, digest.bytes, digest.sha256, digest.xxh3))
    staging.rmdir()
    fsync_dir(folder)
    manifest = KeywordManifest(
        generation=generation,
        folder=name,
        files=files,
        docs=len(ids),
        terms=len(retriever.vocab_dict),
        method=METHOD,
        k1=K1,
        b=B,
        tokenizer=TOKENIZER,
        shards=[CoveredShard(s.file, s.sha256, s.rows) for s in store.shards],
        library_version=bm25s.__version__,
    )
    manifest.save(store.path)
    for path in folder.iterdir():
        if path.is_dir() and path.name != name:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.name != KEYWORD_MANIFEST:
            path.unlink(missing_ok=True)
    return manifest


class KeywordIndex:
    """A store's BM25 index opened for search (see `KeywordIndex.open`)."""

    def __init__(self, store: Store, manifest: KeywordManifest, retriever, ids: np.ndarray) -> None:
        self.store = store
        self.manifest = manifest
        self.retriever = retriever
        self.ids = ids
        self.tokenizer = make_tokenizer(manifest.tokenizer)
        # Shards encoded after the build: not searchable by keyword until `sbert index` runs.
        self.pending = uncovered_shards(store, manifest)
        self.gone = gone_inputs(store, manifest.shards)  # removed since the build: hits dropped

    @classmethod
    def open(cls, store: Store) -> KeywordIndex:
        """The keyword index, refusing a missing, stale or damaged one with what to do about it."""
        where = store.path
        if not store.has_text:
            raise InputError(
                f"{where}: the store was encoded with --no-text, so it has no keyword index; search with --mode dense"
            )
        manifest = _current_manifest(store)
        try:
            return cls._load(store, manifest)
        except DamagedFileError:
            # A build may have committed a new generation (and removed this one) meanwhile.
            fresh = KeywordManifest.load(where)
            if fresh is None or fresh.folder == manifest.folder:
                raise
            return cls._load(store, _current_manifest(store))

    @classmethod
    def _load(cls, store: Store, manifest: KeywordManifest) -> KeywordIndex:
        folder = keyword_dir(store.path) / manifest.folder
        for part in manifest.files:  # verified before bm25s maps them
            check_index_file(folder / part.name, part, store.path)
        retriever, ids = _load_arrays(folder, manifest.docs, manifest.terms, store.path)
        return cls(store, manifest, retriever, ids)

    def search(
        self, queries: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, BM25 scores), each (queries, k), best first, ties to the smaller id. Only texts
        sharing a term with the query are hits: the rest of a row is id -1, score -inf. With
        `allowed` (sorted row ids: a `--where` filter's), only those rows' texts are scored. Rows
        of inputs removed since the build are never hits."""
        return without_gone(lambda n: self._retrieve(queries, n, allowed), k, self.manifest.docs, self.gone)

    def best_scores(self, queries: Sequence[str]) -> np.ndarray:
        """The highest BM25 score any text could reach for each query: the sum of its indexed
        terms' IDF (Lucene's term score idf x tf / (tf + k1 (1 - b + b dl / avgdl)) tends to the IDF
        as tf grows); 0 for a query without an indexed term. A query's own scale for its scores."""
        tokens = self.tokenizer.tokenize(list(queries), update_vocab=True, return_as="string", show_progress=False)
        scores = self.retriever.scores
        indptr, docs = np.asarray(scores["indptr"]), int(scores["num_docs"])
        vocab = self.retriever.vocab_dict
        out = np.zeros(len(tokens), dtype=np.float64)
        for q, words in enumerate(tokens):
            terms = np.array([vocab[w] for w in words if w in vocab], dtype=np.int64)
            df = (indptr[terms + 1] - indptr[terms]).astype(np.float64)
            out[q] = float(np.log1p((docs - df + 0.5) / (df + 0.5)).sum())
        return out

    def _retrieve(self, queries: Sequence[str], k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokenizer.tokenize(list(queries), update_vocab=True, return_as="string", show_progress=False)
        # A mask of 0 leaves a text out of BM25's sums (bm25s's weight_mask): filter first.
        mask = None if allowed is None else np.isin(np.asarray(self.ids), allowed).astype(np.float32)
        row_ids = np.asarray(self.ids)
        ids = np.full((len(tokens), k), -1, dtype=np.int64)
        scores = np.full((len(tokens), k), -np.inf, dtype=np.float32)
        vocabulary = self.retriever.vocab_dict
        for q, words in enumerate(tokens):
            known = [w for w in words if w in vocabulary]
            if not known:  # no term of the query is in any text: no hits
                continue
            all_scores = self.retriever.get_scores(known, weight_mask=mask)
            # Only texts sharing a term score above 0. Selecting among those alone: numpy's
            # argpartition over the whole corpus is slow on the many ties at 0 (bm25s' retrieve:
            # 27 ms a query on 100k rows, against 1 ms).
            found = np.flatnonzero(all_scores > 0)
            if len(found) > k:
                found = found[np.argpartition(-all_scores[found], k - 1)[:k]]
            order = np.lexsort((row_ids[found], -all_scores[found]))  # ties to the smaller id
            ids[q, : len(found)] = row_ids[found][order]
            scores[q, : len(found)] = all_scores[found][order]
        return ids, scores


def _load_arrays(folder: Path, docs: int, terms: int, store_path: Path):
    """bm25s's arrays (memory-mapped) and the row ids, refusing any whose shape is not `docs`
    documents of `terms` terms."""
    bm25s = _bm25s()
    try:
        retriever = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
        ids = np.load(folder / IDS_FILE, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(f"{folder}: unreadable keyword index ({exc}); {index_fix(store_path)}") from exc
    scores = retriever.scores
    indptr = np.asarray(scores["indptr"])
    whole = len(indptr) == terms + 1 and indptr[-1] == len(scores["data"]) == len(scores["indices"])
    if len(ids) != docs or int(scores["num_docs"]) != docs or not whole or np.any(indptr[1:] < indptr[:-1]):
        raise DamagedFileError(
            f"{folder}: the keyword index is damaged (it does not match keyword.json); {index_fix(store_path)}"
        )
    return retriever, ids


def _current_manifest(store: Store) -> KeywordManifest:
    where = store.path
    manifest = KeywordManifest.load(where)
    if manifest is None:
        raise InputError(
            f"{where}: has no keyword index yet; build one with: sbert index {where} (or search with --mode dense)"
        )
    reason = shard_change(store, manifest.shards, removed_ok=True)
    if reason is not None:
        raise InputError(
            f"{KeywordManifest.path_in(where)}: the keyword index is stale: {reason}; bring it up to date with: "
            f"sbert index {where} (or search with --mode dense)"
        )
    return manifest
