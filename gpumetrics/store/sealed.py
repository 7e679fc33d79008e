"""Sealed minutes: where a record can no longer be told from a re-send.

Duplicates are found by the records' identity index. Once retention has deleted a
minute's records, its rollup still counts them but nothing remembers which they were,
so a record for that minute might be one of them sent again. Such a record is refused
with the reason rather than counted twice. A minute before the cut that has no rollup
(a gap that a backfill fills) takes records as usual, until retention seals it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, exists, select

from .. import times
from ..db.tables import marks, records, rollups
from .rollups import MINUTE, minute_of

EXPIRED_BEFORE = "records_expired_before"


def expired_before(conn: Connection) -> int | None:
    # On the driver: this runs once per write transaction, where every microsecond is held.
    found = conn.exec_driver_sql(f"SELECT value FROM marks WHERE name = '{EXPIRED_BEFORE}'").first()
    return None if found is None else found[0]


def note_expired_before(conn: Connection, cutoff: int) -> None:
    """Retention cut the records before `cutoff`; a later, shorter cut does not unseal anything."""
    known = expired_before(conn)
    if known is None:
        conn.execute(marks.insert().values(name=EXPIRED_BEFORE, value=cutoff))
    elif cutoff > known:
        conn.execute(marks.update().where(marks.c.name == EXPIRED_BEFORE).values(value=cutoff))


def refused(conn: Connection, rows: Sequence[Sequence[Any]], layout: tuple[str, ...]) -> dict[int, str]:
    """Positions of the rows whose minute is sealed, with the reason."""
    cut = expired_before(conn)
    if cut is None:
        return {}
    gpu_at, metric_at, ts_at = (layout.index(name) for name in ("gpu_id", "metric", "ts"))
    sealed: dict[tuple, bool] = {}
    out = {}
    for position, row in enumerate(rows):
        if row[ts_at] >= cut:
            continue
        key = (row[gpu_at], row[metric_at], minute_of(row[ts_at]))
        if key not in sealed:
            sealed[key] = _is_sealed(conn, *key)
        if sealed[key]:
            out[position] = (
                f"Its minute ({times.to_iso(key[2])}) is summarized and its records have expired: "
                "a re-sent record cannot be told from a new one, so it is not counted again."
            )
    return out


def _is_sealed(conn: Connection, gpu_id: int, metric: str, minute: int) -> bool:
    summarized = exists().where(rollups.c.gpu_id == gpu_id, rollups.c.metric == metric, rollups.c.minute == minute)
    kept = exists().where(
        records.c.gpu_id == gpu_id,
        records.c.metric == metric,
        records.c.ts >= minute,
        records.c.ts < minute + MINUTE,
    )
    return bool(conn.scalar(select(summarized & ~kept)))
