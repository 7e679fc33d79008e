"""Retention: delete records older than their window and rollups older than theirs, in bounded batches.

Each batch is its own short transaction, with a pause between batches, so ingestion
waits at most one batch for the write lock however much there is to delete. Cut-offs
fall on whole minutes, so no minute's records are half gone while its rollup stays, and
rollups never go before their minute's records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection

from .. import observe, times
from ..db import Database
from ..store import jobs, names, sealed
from ..store import retention as expiry
from ..store.rollups import minute_of

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
ROLLUP_BATCH_MINUTES = 10
PAUSE_SEC = 0.05
HOUR_MICROS = 3600 * 1_000_000


def purge_spans(db: Database, retention_hours: float, batch: int = BATCH_ROWS, pause: float = PAUSE_SEC) -> int:
    """Delete gpumon_client's spans (and samples, processes) older than `retention_hours` (> 0)."""
    if not retention_hours > 0:
        raise ValueError(f"a retention window must be positive, not {retention_hours!r}")
    cutoff_ns = (times.now_micros() - int(retention_hours * HOUR_MICROS)) * 1000

    def spans_batch(conn) -> tuple[int, bool]:
        gone = expiry.delete_expired_spans(conn, cutoff_ns, batch)
        return gone, gone == batch

    deleted = _in_batches(db, spans_batch, pause)[0]
    with db.writing() as conn:
        expiry.forget_old_events(conn, cutoff_ns)
        if deleted:
            names.rebuild(conn)
    log.info("retention: deleted %d spans older than %s", deleted, times.to_iso(cutoff_ns // 1000))
    return deleted


def purge(
    db: Database,
    retention_hours: float,
    rollup_days: float | None = None,
    batch: int = BATCH_ROWS,
    pause: float = PAUSE_SEC,
) -> int:
    """Delete records older than `retention_hours` (> 0) and rollups older than `rollup_days`
    (None: kept for ever); returns how many records went."""
    if not retention_hours > 0:
        raise ValueError(f"a retention window must be positive, not {retention_hours!r}")
    started = times.now_micros()
    cutoff = minute_of(started - int(retention_hours * HOUR_MICROS))

    def records_batch(conn) -> tuple[int, bool]:
        gone = expiry.delete_expired(conn, cutoff, batch)
        return gone, gone == batch

    deleted, batches = _in_batches(db, records_batch, pause)
    rollups_deleted = 0
    if rollup_days is not None:
        rollup_cutoff = min(cutoff, minute_of(started - int(rollup_days * 24 * HOUR_MICROS)))

        def rollups_batch(conn) -> tuple[int, bool]:
            gone = expiry.delete_expired_rollups(conn, rollup_cutoff, ROLLUP_BATCH_MINUTES)
            return gone, gone > 0

        rollups_deleted = _in_batches(db, rollups_batch, pause)[0]
    with db.reading() as conn:
        expiry.warm_up(conn, since=cutoff)
    with db.writing() as conn:
        sealed.note_expired_before(conn, cutoff)
        expiry.delete_expired_latest(conn, cutoff)
        gpus_gone = expiry.forget_empty_gpus(conn, since=cutoff)
        outcome = {"deleted": deleted, "batches": batches, "rollupsDeleted": rollups_deleted}
        outcome |= {"gpusForgotten": gpus_gone, "cutoff": times.to_iso(cutoff)}
        jobs.save_run(conn, "retention", started, outcome)
    log.info("retention: deleted %d records older than %s in %d batches", deleted, times.to_iso(cutoff), batches)
    observe.retention_deleted(deleted)
    return deleted


def _in_batches(db: Database, delete_some: Callable[[Connection], tuple[int, bool]], pause: float) -> tuple[int, int]:
    """Run `delete_some` (rows deleted, more left?) each in its own write transaction; (rows, batches)."""
    deleted, batches = 0, 0
    while True:
        with db.writing() as conn:
            gone, more = delete_some(conn)
        deleted, batches = deleted + gone, batches + 1
        if not more:
            return deleted, batches
        time.sleep(pause)
