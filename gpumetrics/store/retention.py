"""What retention deletes: expired records a batch at a time, then GPUs left with none."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..db import backend_of
from ..db.tables import gpus, records
from ..kinds import KINDS


def delete_expired(session: Session, cutoff: int, batch: int) -> int:
    """Delete up to `batch` records older than `cutoff`, oldest first; returns how many went."""
    return backend_of(session).delete_oldest(session, records, cutoff, batch)


def _oldest(session: Session, gpu_id: int, since: int | None) -> int | None:
    """A GPU's oldest record (at or after `since`), kind by kind: one index probe each."""
    bound = [] if since is None else [records.c.ts >= since]
    firsts = [
        session.scalar(
            select(func.min(records.c.ts)).where(records.c.gpu_id == gpu_id, records.c.metric == kind, *bound)
        )
        for kind in KINDS
    ]
    return min((first for first in firsts if first is not None), default=None)


def oldest_by_gpu(session: Session, since: int | None = None) -> dict[int, int | None]:
    """Each GPU's oldest record (None: it has none), probing from `since` on first.

    Probing from where retention cut avoids walking the index entries of the rows just
    deleted, which PostgreSQL keeps until it vacuums.
    """
    return {
        gpu_id: (since is not None and _oldest(session, gpu_id, since)) or _oldest(session, gpu_id, None)
        for gpu_id in session.scalars(select(gpus.c.id).order_by(gpus.c.id)).all()
    }


def warm_up(session: Session, since: int) -> None:
    """Where the backend needs it, walk each GPU's dead index entries once, before taking locks."""
    if backend_of(session).warm_up_before_locking:
        oldest_by_gpu(session, since)


def forget_empty_gpus(session: Session, since: int | None = None) -> int:
    """Drop GPUs with no records left, and move each GPU's firstSeen to its oldest record."""
    gone = 0
    backend_of(session).lock_hosts(session, session.scalars(select(gpus.c.host).distinct()).all())
    for gpu_id, first in oldest_by_gpu(session, since).items():
        if first is not None:
            session.execute(update(gpus).where(gpus.c.id == gpu_id).values(first_seen=first))
        else:
            gone += session.execute(delete(gpus).where(gpus.c.id == gpu_id)).rowcount
    return gone
