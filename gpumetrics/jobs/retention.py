"""Retention: delete records older than the retention window, in bounded batches.

Each batch is its own short transaction, with a pause between batches, so ingestion
waits at most one batch for the write lock however much there is to delete.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import store, times
from ..db import Database
from ..models import job_runs

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
PAUSE_SEC = 0.05
HOUR_MICROS = 3600 * 1_000_000


def purge(db: Database, retention_hours: float, batch: int = BATCH_ROWS, pause: float = PAUSE_SEC) -> int:
    """Delete every record older than now minus `retention_hours`; returns the count."""
    started = times.now_micros()
    cutoff = started - int(retention_hours * HOUR_MICROS)
    deleted, batches = 0, 0
    while True:
        with db.writing() as session:
            gone = store.purge(session, cutoff, batch)
        deleted += gone
        batches += 1
        if gone < batch:
            break
        time.sleep(pause)
    with db.reading() as session:
        # The same probes once without any lock first: a GPU with no record left makes
        # PostgreSQL walk its dead index entries once, here, not while ingest waits.
        store.oldest_by_gpu(session, since=cutoff)
    with db.writing() as session:
        gpus_gone = store.forget_empty_gpus(session, since=cutoff)
        outcome = {"deleted": deleted, "batches": batches, "gpusForgotten": gpus_gone, "cutoff": times.to_iso(cutoff)}
        _record_run(session, "retention", started, outcome)
    log.info("retention: deleted %d records older than %s in %d batches", deleted, times.to_iso(cutoff), batches)
    return deleted


def _record_run(session: Session, name: str, started: int, outcome: dict[str, Any]) -> None:
    values = {"started_at": started, "finished_at": times.now_micros(), "outcome": json.dumps(outcome)}
    if session.execute(job_runs.update().where(job_runs.c.name == name).values(**values)).rowcount == 0:
        session.execute(job_runs.insert().values(name=name, **values))


def last_run(session: Session, name: str = "retention") -> dict[str, Any] | None:
    row = session.execute(select(job_runs).where(job_runs.c.name == name)).first()
    if row is None:
        return None
    return {
        "startedAt": times.to_iso(row.started_at),
        "finishedAt": times.to_iso(row.finished_at),
        **json.loads(row.outcome),
    }
