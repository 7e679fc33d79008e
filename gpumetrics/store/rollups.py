"""Minute rollups: per GPU, kind, field and minute, what the minute's records add up to.

They are built in the transaction that stores the records, from the rows that insert
really added (a duplicate adds nothing), with an upsert that adds counts and sums and
keeps the extremes and the newest value: so they are the same for any arrival order,
late, out of order, backfilled or re-sent. Each batch is summed in Python before the
write lock is taken; only the upsert of a few rows per GPU and minute runs under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from ..db import backend_of
from ..kinds import KINDS

MINUTE = 60_000_000  # microseconds

ROLLUP_COLUMNS = ("gpu_id", "metric", "field", "minute", "count", "sum", "min", "max", "first_ts", "last_ts", "last")

Summary = list  # [count, sum, min, max, first_ts, last_ts, last]


def minute_of(ts: int) -> int:
    return ts - ts % MINUTE  # floors before 1970 too


def add(summary: Summary, ts: int, value: float) -> None:
    """Fold one record's value into a minute's summary."""
    summary[0] += 1
    summary[1] += value
    if value < summary[2]:
        summary[2] = value
    if value > summary[3]:
        summary[3] = value
    if ts < summary[4]:
        summary[4] = ts
    if ts > summary[5] or (ts == summary[5] and value > summary[6]):
        summary[5], summary[6] = ts, value


def merge(summary: Summary, other: Summary) -> None:
    """Fold another summary of the same minute into `summary` (the upsert's rule, in Python)."""
    summary[0] += other[0]
    summary[1] += other[1]
    summary[2] = min(summary[2], other[2])
    summary[3] = max(summary[3], other[3])
    summary[4] = min(summary[4], other[4])
    # A last of None was not read (summaries.summaries without with_last): no tie to break.
    tie = other[5] == summary[5] and None not in (other[6], summary[6]) and other[6] > summary[6]
    if other[5] > summary[5] or tie:
        summary[5], summary[6] = other[5], other[6]


@lru_cache
def _slots(layout: tuple[str, ...]) -> dict[str, list[tuple[int, str]]]:
    """Per kind: (position in a row of `layout`, column) of each measured field."""
    return {
        name: [(layout.index(field.column), field.column) for field in kind.fields if field.measured]
        for name, kind in KINDS.items()
    }


def summarize(owners: Sequence[Any], rows: Sequence[Sequence[Any]], layout: tuple[str, ...]) -> dict[tuple, Summary]:
    """(owner, metric, column, minute) -> summary, from rows of `layout` (which has metric and ts).

    `owners[i]` names the GPU of rows[i]: its key before the write, its id after.
    """
    slots, metric_at, ts_at = _slots(layout), layout.index("metric"), layout.index("ts")
    out: dict[tuple, Summary] = {}
    for owner, row in zip(owners, rows, strict=True):
        metric, ts = row[metric_at], row[ts_at]
        minute = ts - ts % MINUTE
        for slot, column in slots[metric]:
            value = row[slot]
            if value is None:
                continue
            key = (owner, metric, column, minute)
            summary = out.get(key)
            if summary is None:
                out[key] = [1, value, value, value, ts, ts, value]
            else:
                add(summary, ts, value)
    return out


def by_gpu_id(summaries: dict[tuple, Summary], ids: dict[Any, int]) -> dict[tuple, Summary]:
    """Summaries keyed by GPU key to summaries keyed by GPU id (two keys may name one GPU)."""
    out: dict[tuple, Summary] = {}
    for (owner, metric, column, minute), summary in summaries.items():
        key = (ids[owner], metric, column, minute)
        known = out.get(key)
        if known is None:
            out[key] = list(summary)
        else:
            merge(known, summary)
    return out


def _on_conflict(smaller: str, larger: str) -> str:
    """The upsert's rule: counts and sums add, extremes stay, the newest value wins."""
    newer = (
        "excluded.last_ts > rollups.last_ts OR (excluded.last_ts = rollups.last_ts AND excluded.last > rollups.last)"
    )
    return (
        "ON CONFLICT (gpu_id, metric, field, minute) DO UPDATE SET "
        "count = rollups.count + excluded.count, sum = rollups.sum + excluded.sum, "
        f"min = {smaller}(rollups.min, excluded.min), max = {larger}(rollups.max, excluded.max), "
        f"first_ts = {smaller}(rollups.first_ts, excluded.first_ts), "
        f"last = CASE WHEN {newer} THEN excluded.last ELSE rollups.last END, "
        f"last_ts = {larger}(rollups.last_ts, excluded.last_ts)"
    )


_INSERT = f"INSERT INTO rollups ({', '.join(ROLLUP_COLUMNS)})"


def apply(conn: Connection, summaries: dict[tuple, Summary]) -> None:
    """Add summaries keyed by GPU id to the stored rollups, in the connection's transaction."""
    if not summaries:
        return
    backend = backend_of(conn)
    rows: Sequence[tuple] = [(*key, *summary) for key, summary in summaries.items()]
    values = f"VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
    backend.executemany(conn, f"{_INSERT} {values} {_on_conflict(backend.smaller, backend.larger)}", rows)


def move(conn: Connection, source: int, target: int, dropped: dict[tuple, Summary]) -> None:
    """Fold the rollups of GPU `source` into GPU `target` (a merge of two GPUs into one).

    `dropped` summarizes `source`'s records that were duplicates of `target`'s and are
    deleted: their counts and sums come off first, so no record counts twice.
    """
    backend = backend_of(conn)
    less = "UPDATE rollups SET count = count - ?, sum = sum - ? "
    less += "WHERE gpu_id = ? AND metric = ? AND field = ? AND minute = ?"
    backend.executemany(conn, less, [(s[0], s[1], *key) for key, s in dropped.items()])
    rows = f"SELECT ?, {', '.join(ROLLUP_COLUMNS[1:])} FROM rollups WHERE gpu_id = ? AND count > 0"
    backend.executemany(conn, f"{_INSERT} {rows} {_on_conflict(backend.smaller, backend.larger)}", [(target, source)])
    backend.executemany(conn, "DELETE FROM rollups WHERE gpu_id = ?", [(source,)])
