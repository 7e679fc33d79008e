"""What retention deletes: expired records and rollups a batch at a time, then GPUs left with neither."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select, text, update

from ..db import backend_of
from ..db.tables import gpus, latest, records, rollups
from ..kinds import KINDS
from .rollups import MINUTE


def delete_expired(conn: Connection, cutoff: int, batch: int) -> int:
    """Delete up to `batch` records older than `cutoff`, oldest first; returns how many went."""
    return backend_of(conn).delete_oldest(conn, records, cutoff, batch)


def delete_expired_rollups(conn: Connection, cutoff: int, minutes: int) -> int:
    """Delete the rollups of up to `minutes` of the oldest minutes before `cutoff`; returns rows deleted."""
    oldest = conn.scalar(select(func.min(rollups.c.minute)))
    if oldest is None or oldest >= cutoff:
        return 0
    until = min(cutoff, oldest + minutes * MINUTE)
    return conn.execute(delete(rollups).where(rollups.c.minute < until)).rowcount


def delete_expired_latest(conn: Connection, cutoff: int) -> None:
    """The newest copies of records that expired go with them."""
    conn.execute(delete(latest).where(latest.c.ts < cutoff))


def _oldest(conn: Connection, gpu_id: int, since: int | None) -> int | None:
    """A GPU's oldest record (at or after `since`), kind by kind: one index probe each."""
    bound = [] if since is None else [records.c.ts >= since]
    firsts = [
        conn.scalar(select(func.min(records.c.ts)).where(records.c.gpu_id == gpu_id, records.c.metric == kind, *bound))
        for kind in KINDS
    ]
    return min((first for first in firsts if first is not None), default=None)


def _oldest_rollup(conn: Connection, gpu_id: int) -> int | None:
    """The time of a GPU's oldest record counted in the rollups: probes of the rollups' key."""
    firsts = []
    for kind in KINDS:
        minute = conn.scalar(
            select(func.min(rollups.c.minute)).where(rollups.c.gpu_id == gpu_id, rollups.c.metric == kind)
        )
        if minute is not None:
            firsts.append(
                conn.scalar(
                    select(func.min(rollups.c.first_ts)).where(
                        rollups.c.gpu_id == gpu_id, rollups.c.metric == kind, rollups.c.minute == minute
                    )
                )
            )
    return min(firsts, default=None)


def oldest_by_gpu(conn: Connection, since: int | None = None) -> dict[int, int | None]:
    """Each GPU's oldest record (None: it has none), probing from `since` on first.

    Probing from where retention cut avoids walking the index entries of the rows just
    deleted, which PostgreSQL keeps until it vacuums.
    """
    return {
        gpu_id: (since is not None and _oldest(conn, gpu_id, since)) or _oldest(conn, gpu_id, None)
        for gpu_id in conn.scalars(select(gpus.c.id).order_by(gpus.c.id)).all()
    }


def warm_up(conn: Connection, since: int) -> None:
    """Where the backend needs it, walk each GPU's dead index entries once, before taking locks."""
    if backend_of(conn).warm_up_before_locking:
        oldest_by_gpu(conn, since)


def forget_empty_gpus(conn: Connection, since: int | None = None) -> int:
    """Drop GPUs with neither records nor rollups left; move each GPU's firstSeen to its oldest."""
    gone = 0
    backend_of(conn).lock_hosts(conn, conn.scalars(select(gpus.c.host).distinct()).all())
    for gpu_id, first_record in oldest_by_gpu(conn, since).items():
        first_rollup = _oldest_rollup(conn, gpu_id)
        first = min((t for t in (first_record, first_rollup) if t is not None), default=None)
        if first is not None:
            conn.execute(update(gpus).where(gpus.c.id == gpu_id).values(first_seen=first))
        else:
            conn.execute(delete(latest).where(latest.c.gpu_id == gpu_id))
            gone += conn.execute(delete(gpus).where(gpus.c.id == gpu_id)).rowcount
    return gone


def delete_expired_spans(conn: Connection, cutoff_ns: int, batch: int) -> int:
    """Delete up to `batch` spans that ended (open scopes: began) before `cutoff_ns` of UTC."""
    ids = (
        "SELECT s.id FROM spans s JOIN host_clocks c ON c.host = s.host AND c.boot = s.boot "
        "WHERE c.offset_ns + coalesce(s.end_ns, s.start_ns) < :cutoff LIMIT :n"
    )
    return backend_of(conn).delete_ids(conn, "spans", ids, {"cutoff": cutoff_ns, "n": batch})


def forget_old_events(conn: Connection, cutoff_ns: int) -> None:
    """Scope samples, seen GPU samples and processes older than `cutoff_ns`, once their spans are gone."""
    for table, column in (("scope_samples", "ts_ns"), ("system_samples", "ts_ns"), ("processes", "last_ns")):
        old = (
            f"EXISTS (SELECT 1 FROM host_clocks c WHERE c.host = {table}.host AND c.boot = {table}.boot "
            f"AND c.offset_ns + {table}.{column} < :cutoff)"
        )
        if table == "processes":
            old += " AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.host = processes.host AND s.pid = processes.pid)"
        conn.execute(text(f"DELETE FROM {table} WHERE {old}"), {"cutoff": cutoff_ns})
