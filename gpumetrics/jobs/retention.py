"""Retention: delete records older than the retention window, in bounded batches.

Each batch is its own short transaction, with a pause between batches, so ingestion
waits at most one batch for the write lock however much there is to delete.
"""

from __future__ import annotations

import logging
import time

from .. import times
from ..db import Database
from ..store import jobs
from ..store import retention as expiry

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
PAUSE_SEC = 0.05
HOUR_MICROS = 3600 * 1_000_000


def purge(db: Database, retention_hours: float, batch: int = BATCH_ROWS, pause: float = PAUSE_SEC) -> int:
    """Delete every record older than now minus `retention_hours` (> 0); returns the count."""
    if not retention_hours > 0:
        raise ValueError(f"a retention window must be positive, not {retention_hours!r}")
    started = times.now_micros()
    cutoff = started - int(retention_hours * HOUR_MICROS)
    deleted, batches = 0, 0
    while True:
        with db.writing() as session:
            gone = expiry.delete_expired(session, cutoff, batch)
        deleted += gone
        batches += 1
        if gone < batch:
            break
        time.sleep(pause)
    with db.reading() as session:
        expiry.warm_up(session, since=cutoff)
    with db.writing() as session:
        gpus_gone = expiry.forget_empty_gpus(session, since=cutoff)
        outcome = {"deleted": deleted, "batches": batches, "gpusForgotten": gpus_gone, "cutoff": times.to_iso(cutoff)}
        jobs.save_run(session, "retention", started, outcome)
    log.info("retention: deleted %d records older than %s in %d batches", deleted, times.to_iso(cutoff), batches)
    return deleted
