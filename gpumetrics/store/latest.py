"""The newest record of every GPU and kind, kept as a copy beside the records.

"The fleet now" (GET /metrics/latest, the dashboard, /prometheus) is then one read of a
row per GPU and kind instead of a probe per GPU and kind into millions of records. Every
write keeps it current in the same transaction; for processes it holds every process at
the GPU's newest process time. An older record never replaces a newer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select

from ..db import backend_of
from ..db.tables import gpus, latest, records
from ..kinds import COLUMNS
from .queries import Filters, gpu_ids, record_out

LATEST_COLUMNS = ("gpu_id", "metric", "pid_key", "ts", *COLUMNS)
_UPSERT = (
    f"INSERT INTO latest ({', '.join(LATEST_COLUMNS)}) VALUES ({', '.join('?' * len(LATEST_COLUMNS))}) "
    "ON CONFLICT (gpu_id, metric, pid_key) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in ("ts", *COLUMNS))
    + " WHERE excluded.ts > latest.ts"
)


def newest(rows: Sequence[Sequence[Any]], layout: tuple[str, ...]) -> list[tuple]:
    """The rows (gpu_id first) that may be the newest of their GPU and kind, as latest rows."""
    gpu_at, metric_at, ts_at, pid_at = (layout.index(name) for name in ("gpu_id", "metric", "ts", "pid"))
    best: dict[tuple, tuple[int, dict[int, Sequence[Any]]]] = {}
    for row in rows:
        key, ts = (row[gpu_at], row[metric_at]), row[ts_at]
        known = best.get(key)
        if known is None or ts > known[0]:
            best[key] = (ts, {})
            known = best[key]
        if ts == known[0]:
            pid = row[pid_at]
            known[1].setdefault(-1 if pid is None else pid, row)  # the first of duplicates is what was stored
    values_at = [layout.index(column) for column in COLUMNS]
    return [
        (gpu_id, metric, pid_key, ts, *(row[i] for i in values_at))
        for (gpu_id, metric), (ts, by_pid) in best.items()
        for pid_key, row in by_pid.items()
    ]


def apply(conn: Connection, rows: list[tuple]) -> None:
    """Keep the newest copies current; processes older than their GPU's newest go."""
    if not rows:
        return
    backend_of(conn).executemany(conn, _UPSERT, rows)
    process_gpus = {row[0] for row in rows if row[1] == "process"}
    if process_gpus:
        _drop_older_processes(conn, process_gpus)


def _drop_older_processes(conn: Connection, gpu_ids: set[int]) -> None:
    sql = (
        "DELETE FROM latest WHERE gpu_id = ? AND metric = 'process' AND ts < "
        "(SELECT max(ts) FROM latest WHERE gpu_id = ? AND metric = 'process')"
    )
    backend_of(conn).executemany(conn, sql, [(gpu_id, gpu_id) for gpu_id in gpu_ids])


def rebuild(conn: Connection, gpu_ids: Sequence[int]) -> None:
    """Make the copies of these GPUs again from their records (after a merge or retention)."""
    conn.execute(delete(latest).where(latest.c.gpu_id.in_(gpu_ids)))
    newest_ts = (
        select(records.c.gpu_id, records.c.metric, func.max(records.c.ts).label("ts"))
        .where(records.c.gpu_id.in_(gpu_ids))
        .group_by(records.c.gpu_id, records.c.metric)
        .subquery()
    )
    rows = select(
        records.c.gpu_id,
        records.c.metric,
        func.coalesce(records.c.pid, -1),
        records.c.ts,
        *(records.c[column] for column in COLUMNS),
    ).join(
        newest_ts,
        and_(
            records.c.gpu_id == newest_ts.c.gpu_id,
            records.c.metric == newest_ts.c.metric,
            records.c.ts == newest_ts.c.ts,
        ),
    )
    conn.execute(insert(latest).from_select(list(LATEST_COLUMNS), rows))


def read(conn: Connection, filters: Filters) -> list[dict[str, Any]]:
    """The newest record of every GPU and kind the filters name, in the shape of GET /metrics."""
    conditions = []
    ids = gpu_ids(conn, filters)
    if ids is not None:
        conditions.append(latest.c.gpu_id.in_(ids))
    if filters.metric is not None:
        conditions.append(latest.c.metric == filters.metric)
    query = (
        select(latest, gpus.c.host, gpus.c.gpu_index, gpus.c.uuid, gpus.c.name)
        .join(gpus, gpus.c.id == latest.c.gpu_id)
        .where(*conditions)
        .order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id, latest.c.metric, latest.c.pid_key)
    )
    return [record_out(row) for row in conn.execute(query)]
