"""Summaries of records over time buckets: whole minutes from the rollups, the rest from the records.

A bucket starts at floor(t / step) * step (epoch-aligned, like TimescaleDB's time_bucket).
When the step is a whole number of minutes (or there is one bucket for the whole span),
every minute that lies wholly inside the span is read from the rollups and only the
partial minutes at its edges from the records; otherwise everything comes from the
records. Either way the answer is the same (tests/store/test_summaries.py compares both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, func, literal, select

from ..db import backend_of
from ..db.tables import records, rollups
from .rollups import MINUTE, Summary, add, merge, minute_of

Key = tuple[int, str, int]  # (gpu id, column, bucket start)


@dataclass(frozen=True)
class Span:
    """Inclusive bounds in epoch microseconds; None is open."""

    start: int | None = None
    end: int | None = None

    def whole_minutes(self) -> tuple[int | None, int | None]:
        """[first, stop): the minutes that lie wholly inside the span."""
        first = None if self.start is None else minute_of(self.start + MINUTE - 1)
        stop = None if self.end is None else minute_of(self.end + 1)
        return first, stop


def bucket_of(ts: int, step: int | None) -> int:
    return 0 if step is None else ts - ts % step


def _bucket(column, step: int | None):
    return literal(0) if step is None else column - ((column % step) + step) % step


def _segments(span: Span, step: int | None) -> tuple[tuple[int | None, int | None] | None, list[tuple]]:
    """The rollup minutes [first, stop) to read, and the record spans (inclusive) to read."""
    if step is not None and step % MINUTE:
        return None, [(span.start, span.end)]
    first, stop = span.whole_minutes()
    if first is not None and stop is not None and first >= stop:
        return None, [(span.start, span.end)]
    edges = []
    if span.start is not None and span.start < first:
        edges.append((span.start, first - 1))
    if span.end is not None and span.end >= stop:
        edges.append((stop, span.end))
    return (first, stop), edges


def summaries(
    conn: Connection,
    gpu_ids: Sequence[int] | None,
    metric: str,
    columns: Sequence[str],
    span: Span,
    step: int | None,
    with_last: bool = True,
) -> dict[Key, Summary]:
    """(gpu id, column, bucket) -> summary of the records of `metric` in `span`.

    Without `with_last` a bucket's newest value may be missing (None): a second pass over
    the rollups that only `last` needs.
    """
    minutes, edges = _segments(span, step)
    out = _from_rollups(conn, gpu_ids, metric, columns, minutes, step, with_last) if minutes is not None else {}
    for low, high in edges:
        rows = _record_rows(conn, gpu_ids, metric, columns, low, high)
        for key, summary in _summarize(rows, columns, step).items():
            known = out.get(key)
            if known is None:
                out[key] = summary
            else:
                merge(known, summary)
    return out


def values(
    conn: Connection, gpu_ids: Sequence[int] | None, metric: str, column: str, span: Span, step: int | None
) -> dict[tuple[int, int], list[float]]:
    """(gpu id, bucket) -> every value of the records: what exact percentiles need."""
    out: dict[tuple[int, int], list[float]] = {}
    for gpu_id, ts, value in _record_rows(conn, gpu_ids, metric, [column], span.start, span.end):
        if value is not None:
            out.setdefault((gpu_id, bucket_of(ts, step)), []).append(value)
    return out


def _where(table, gpu_ids: Sequence[int] | None, metric: str) -> list:
    conditions = [table.c.metric == metric]
    if gpu_ids is not None:
        conditions.append(table.c.gpu_id.in_(gpu_ids))
    return conditions


def _record_rows(conn, gpu_ids, metric, columns, low, high) -> Iterable[tuple]:
    conditions = _where(records, gpu_ids, metric)
    if low is not None:
        conditions.append(records.c.ts >= low)
    if high is not None:
        conditions.append(records.c.ts <= high)
    query = select(records.c.gpu_id, records.c.ts, *(records.c[column] for column in columns)).where(*conditions)
    return conn.execute(query)


def _summarize(rows: Iterable[tuple], columns: Sequence[str], step: int | None) -> dict[Key, Summary]:
    out: dict[Key, Summary] = {}
    for gpu_id, ts, *row in rows:
        bucket = bucket_of(ts, step)
        for column, value in zip(columns, row, strict=True):
            if value is None:
                continue
            summary = out.get((gpu_id, column, bucket))
            if summary is None:
                out[(gpu_id, column, bucket)] = [1, value, value, value, ts, ts, value]
            else:
                add(summary, ts, value)
    return out


def _from_rollups(conn, gpu_ids, metric, columns, minutes, step, with_last: bool) -> dict[Key, Summary]:
    first, stop = minutes
    conditions = [*_where(rollups, gpu_ids, metric), rollups.c.field.in_(columns)]
    if first is not None:
        conditions.append(rollups.c.minute >= first)
    if stop is not None:
        conditions.append(rollups.c.minute < stop)
    bucket = _bucket(rollups.c.minute, step)
    c = rollups.c
    grouped: Select = (
        select(c.gpu_id, c.field, bucket.label("bucket"), func.sum(c.count), backend_of(conn).sum(c.sum))
        .add_columns(func.min(c.min), func.max(c.max), func.min(c.first_ts), func.max(c.last_ts))
        .where(*conditions)
        .group_by(c.gpu_id, c.field, bucket)
    )
    out: dict[Key, Summary] = {  # PostgreSQL sums bigints as numeric
        (gpu_id, field, bucket): [int(count), float(total), low, high, first_ts, last_ts, None]
        for gpu_id, field, bucket, count, total, low, high, first_ts, last_ts in conn.execute(grouped)
    }
    if not with_last:
        return out
    newest = func.row_number().over(
        partition_by=(c.gpu_id, c.field, bucket), order_by=(c.last_ts.desc(), c.last.desc())
    )
    ranked = (
        select(c.gpu_id, c.field, bucket.label("bucket"), c.last, newest.label("rank")).where(*conditions).subquery()
    )
    for gpu_id, field, bucket_start, last in conn.execute(
        select(ranked.c.gpu_id, ranked.c.field, ranked.c.bucket, ranked.c.last).where(ranked.c.rank == 1)
    ):
        out[(gpu_id, field, bucket_start)][6] = last
    return out
