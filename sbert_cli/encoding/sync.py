"""`sbert encode INPUT... -o STORE --sync`: make an existing store hold exactly the records of the
given inputs as they are now, spending model time only on records it has never seen.

Under the store lock: plan (encoding/plan.py `plan_sync`), read every changed input and match
its records against the stored ones (store/sync.py), then commit the changes that need no model
(removals, renames, touches, edits that only dropped or moved records), then run the encode loop
over new inputs, resumed ones and the records edits added, each edited input committed whole
when its last record is encoded. Every step is its own commit: killed at any moment, the same
command again plans from what was committed and ends where an uninterrupted run ends. Nothing
to encode: the model is never loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sbert_cli.encoding.options import EncodeOptions, EncodeSummary
from sbert_cli.encoding.plan import (
    PlannedInput,
    SyncCounts,
    SyncPlan,
    file_identity,
    file_sha256,
    plan_inputs,
    plan_sync,
)
from sbert_cli.inputs.reader import InputSource, scan
from sbert_cli.progress import Reporter
from sbert_cli.store.delete import commit, drop_inputs, remove_unlisted
from sbert_cli.store.manifest import InputEntry, StoreManifest
from sbert_cli.store.store import Store, store_lock
from sbert_cli.store.sync import Rewrite, RewriteCommitter, plan_rewrite

log = logging.getLogger("sbert")


def sync_corpus(
    store_path: Path,
    sources: list[InputSource],
    options: EncodeOptions,
    reporter: Reporter,
    run: Callable[..., EncodeSummary],
    encoder=None,
) -> EncodeSummary:
    """Bring the store at `store_path` (which exists) in line with `sources`; see the module doc.
    `run(encoder, store_path, manifest, items, options, total, reporter)` is the encode loop
    (runner._run_with_settings), called only when there is something to encode."""
    with store_lock(store_path):
        store = Store.open(store_path)
        manifest = store.manifest
        remove_unlisted(store_path, manifest)
        plan = plan_sync(sources, manifest)
        new_records = {s.name: scan(s, options.read) for s in plan.new}  # bad input stops here
        rewrites = _plan_rewrites(store, plan, options)
        counts = SyncCounts(
            new=len(plan.new),
            changed=len(plan.changed),
            removed=len(plan.removed),
            renamed=len(plan.renamed),
            unchanged=len(plan.unchanged) + len(plan.touched) + len(plan.resumed),
            reencoded=sum(len(r.encode) for r in rewrites),
        )
        _log_plan(plan, rewrites)
        _commit_without_model(store_path, manifest, plan, rewrites)
        items = plan_inputs([s for s in plan.new] + [s for s, _ in plan.resumed], manifest, False, log.debug)
        for item in items:
            stats = new_records.get(item.source.name) or scan(item.source, options.read)
            item.records = stats.records
        items += [_rewrite_item(store_path, manifest, r) for r in rewrites if r.encode]
        total = sum(item.records or 0 for item in items)
        if total == 0:
            _finish_empty(store_path, manifest, items, options)
            summary = EncodeSummary(str(store_path), store_rows=manifest.rows)
        else:
            from sbert_cli.encoding.loader import load_encoder

            encoder = encoder or load_encoder(options.model_settings())
            store.check_compatible(encoder.describe(), "this run's model")
            summary = run(encoder, store_path, manifest, items, options, total, reporter)
            # The loop saved the manifest as it finished each edited input: now its old files go.
            for item in items:
                for name in getattr(item.committer, "old_files", ()):
                    (store_path / name).unlink(missing_ok=True)
    summary.sync = counts
    return summary


def _plan_rewrites(store: Store, plan: SyncPlan, options: EncodeOptions) -> list[Rewrite]:
    """Changed and renamed inputs, each matched record by record against its stored rows."""
    rewrites = []
    for source, entry in [*plan.changed, *plan.renamed]:
        path, size, mtime_ns = file_identity(source)
        sha = plan.hashes.get(source.name) or file_sha256(source)
        rewrites.append(plan_rewrite(store, entry, source, (path, size, mtime_ns, sha), options.read))
    return rewrites


def _commit_without_model(store_path: Path, manifest: StoreManifest, plan: SyncPlan, rewrites: list[Rewrite]) -> None:
    """Removals, touches, renames and edits with nothing new to encode, in one commit: no model time."""
    old_files = drop_inputs(manifest, plan.removed)
    for rewrite in rewrites:
        if not rewrite.encode:
            committer = RewriteCommitter(store_path, manifest, rewrite)
            committer.commit()
            old_files += committer.old_files
    for source, entry in plan.touched:
        entry.path, entry.size, entry.mtime_ns = file_identity(source)
        entry.content_sha256 = plan.hashes.get(source.name) or entry.content_sha256
    if old_files or plan.touched or plan.removed or any(not r.encode for r in rewrites):
        commit(store_path, manifest, old_files)


def _rewrite_item(store_path: Path, manifest: StoreManifest, rewrite: Rewrite) -> PlannedInput:
    """An edited input for the encode loop: a fresh view of its entry (so the loop reads the
    file from the start), the lines to encode, and the committer that writes the input whole."""
    old = rewrite.entry
    view = InputEntry(
        index=old.index, source=rewrite.source.name, path=None, size=None, mtime_ns=None, format=old.format
    )
    committer = RewriteCommitter(store_path, manifest, rewrite)
    return PlannedInput(rewrite.source, view, len(rewrite.encode), only_lines=rewrite.encode, committer=committer)


def _finish_empty(store_path: Path, manifest: StoreManifest, items: list[PlannedInput], options: EncodeOptions) -> None:
    """New inputs without a record: complete, with no rows, and no model loaded for them."""
    for item in items:
        item.entry.complete = True
        item.entry.blank = scan(item.source, options.read).blank
    if items:
        manifest.save(store_path)


def _log_plan(plan: SyncPlan, rewrites: list[Rewrite]) -> None:
    """One line per input, shown under -v (the summary line is the CLI's)."""
    for source in plan.new:
        log.debug("%s: new", source.name)
    for rewrite in rewrites:
        kept = len(rewrite.keep)
        if rewrite.source.name != rewrite.entry.source and not rewrite.encode and kept == rewrite.records:
            log.debug(
                "%s: renamed from %s (%d records, nothing to encode)", rewrite.source.name, rewrite.entry.source, kept
            )
        else:
            log.debug(
                "%s: changed, %d records: %d kept, %d to encode",
                rewrite.source.name,
                rewrite.records,
                kept,
                len(rewrite.encode),
            )
    for entry in plan.removed:
        log.debug("%s: removed (%d rows)", entry.source, entry.rows_done)
    for source, _ in plan.touched:
        log.debug("%s: unchanged (touched: same content)", source.name)
    for source, entry in plan.resumed:
        log.debug("%s: resuming after line %d", source.name, entry.last_line)
    for source, entry in plan.unchanged:
        log.debug("%s: unchanged, %d rows", source.name, entry.rows_done)
