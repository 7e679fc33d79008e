"""Reads of stored records: pages, aggregates, GPUs, per-GPU statistics.

Functions take a Connection and never commit: the caller decides the transaction (one
per request). Every per-GPU read ranges over the records' identity index.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from .. import times
from ..db.tables import gpus, records
from ..kinds import COLUMNS, FIELD_KINDS, INT64_MAX, KINDS, Kind
from . import summaries
from .rollups import merge

FIELD_COLUMN = {field.name: column for column, field in COLUMNS.items()}


def _several(value: Any) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list | tuple) else (value,)


@dataclass(frozen=True)
class Filters:
    """Which records a read is about; an empty tuple or None means no constraint."""

    gpu_indexes: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    uuids: tuple[str, ...] = ()
    metric: str | None = None
    start: int | None = None
    end: int | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Filters:
        return cls(
            gpu_indexes=_several(args.get("gpuIndex")),
            hosts=_several(args.get("host")),
            uuids=_several(args.get("uuid")),
            metric=args.get("metric"),
            start=args.get("start"),
            end=args.get("end"),
        )


class BadCursor(ValueError):
    """A cursor that this service did not hand out, or for another order."""


def gpu_ids(conn: Connection, filters: Filters) -> list[int] | None:
    """Ids of the GPUs the filters name, or None when they name no GPU."""
    conditions = []
    if filters.hosts:
        conditions.append(gpus.c.host.in_(filters.hosts))
    if filters.gpu_indexes:
        conditions.append(gpus.c.gpu_index.in_(filters.gpu_indexes))
    if filters.uuids:
        conditions.append(gpus.c.uuid.in_(filters.uuids))
    if not conditions:
        return None
    return list(conn.scalars(select(gpus.c.id).where(*conditions)))


def _where(conn: Connection, filters: Filters, metrics: Sequence[str] | None = None) -> list:
    """Record conditions, phrased so every per-GPU read ranges over the identity index."""
    conditions = []
    ids = gpu_ids(conn, filters)
    if ids is not None:
        conditions.append(records.c.gpu_id.in_(ids))
    if filters.metric is not None:
        metrics = [filters.metric]
    if metrics is not None:
        conditions.append(records.c.metric.in_(metrics))
    if filters.start is not None:
        conditions.append(records.c.ts >= filters.start)
    if filters.end is not None:
        conditions.append(records.c.ts <= filters.end)
    return conditions


def _plain(value: Any) -> Any:
    """Integral floats back to integers, so 40960 reads back as it was sent."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def record_out(row: Any) -> dict[str, Any]:
    """A stored row (joined with its GPU) in the shape it was ingested in.

    A record of its host without a GPU says so: gpuIndex and uuid are both null.
    """
    out: dict[str, Any] = {"timestamp": times.to_iso(row.ts), "gpuIndex": row.gpu_index, "metric": row.metric}
    if row.host:
        out["host"] = row.host
    if row.uuid is not None or row.gpu_index is None:
        out["uuid"] = row.uuid
    if row.name is not None:
        out["name"] = row.name
    for field in KINDS[row.metric].fields:
        value = getattr(row, field.column)
        if value is not None:
            out[field.name] = _plain(value)
    return out


def _cursor(order: str, ts: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{order}:{ts}:{row_id}".encode()).decode().rstrip("=")


def _parse_cursor(cursor: str, order: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made_for, ts, row_id = text.split(":")
        position = int(ts), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("Not a cursor this service handed out.") from None
    if not all(-INT64_MAX - 1 <= number <= INT64_MAX for number in position):
        raise BadCursor("Not a cursor this service handed out.")
    if made_for != order:
        raise BadCursor(f"This cursor continues order={made_for}.")
    return position


def page(
    conn: Connection, filters: Filters, limit: int, order: str = "asc", cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of records in (timestamp, id) order, and the cursor of the next page.

    Keyset pagination: a page starts strictly after the last (timestamp, id) handed
    out, so pages never repeat or skip a record, however many arrive in between.
    """
    conditions = _where(conn, filters)
    ts, row_id = records.c.ts, records.c.id
    if cursor is not None:
        after_ts, after_id = _parse_cursor(cursor, order)
        if order == "asc":
            conditions += [ts >= after_ts, or_(ts > after_ts, row_id > after_id)]
        else:
            conditions += [ts <= after_ts, or_(ts < after_ts, row_id < after_id)]
    ordering = (ts.asc(), row_id.asc()) if order == "asc" else (ts.desc(), row_id.desc())
    query = (
        select(records, gpus.c.host, gpus.c.gpu_index, gpus.c.uuid, gpus.c.name)
        .join(gpus, gpus.c.id == records.c.gpu_id)
        .where(and_(True, *conditions))
        .order_by(*ordering)
        .limit(limit + 1)
    )
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [record_out(row) for row in rows]
    next_cursor = _cursor(order, rows[-1].ts, rows[-1].id) if more else None
    return items, next_cursor


def aggregate(conn: Connection, filters: Filters, function: str, field: str | None) -> tuple[float | None, int]:
    """(value, count) of one aggregate over the filtered records; value None if none.

    Whole minutes come from the rollups, so this reaches as far back as they are kept.
    """
    if field is not None:
        metrics = [filters.metric] if filters.metric else list(FIELD_KINDS[field])
    else:
        metrics = [filters.metric] if filters.metric else list(KINDS)
    ids = gpu_ids(conn, filters)
    span = summaries.Span(filters.start, filters.end)
    total: list | None = None
    for metric in metrics:
        column = FIELD_COLUMN[field] if field is not None else count_column(metric)
        found = summaries.summaries(conn, ids, metric, [column], span, None, with_last=function == "last")
        for summary in found.values():
            if total is None:
                total = list(summary)
            else:
                merge(total, summary)
    if total is None:
        return None, 0
    count, value_sum, low, high = total[:4]
    if field is None:
        return (float(count) if function == "count" else None), count
    value = {"avg": value_sum / count, "min": low, "max": high, "sum": value_sum, "count": count}[function]
    return float(value), count


def count_column(metric: str) -> str:
    """The column whose values count a kind's records: its first required measurement."""
    return next(f.column for f in KINDS[metric].fields if f.measured and f.required)


def is_gpu() -> Any:
    """A row of the gpus table that is a GPU, not a host's records without one."""
    return or_(gpus.c.gpu_index.is_not(None), gpus.c.uuid.is_not(None))


def gpu_list(conn: Connection, filters: Filters | None = None) -> list[dict[str, Any]]:
    """Every GPU that has records (of the filters' host, index, UUID), with the time range they cover."""
    ids = gpu_ids(conn, filters) if filters is not None else None
    query = select(gpus).where(is_gpu()).order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id)
    rows = conn.execute(query if ids is None else query.where(gpus.c.id.in_(ids)))
    return [
        {**_gpu_out(row), "firstSeen": times.to_iso(row.first_seen), "lastSeen": times.to_iso(row.last_seen)}
        for row in rows
    ]


def _gpu_out(row: Any) -> dict[str, Any]:
    return {"gpuIndex": row.gpu_index, "host": row.host or None, "uuid": row.uuid, "name": row.name}


def stats(conn: Connection, filters: Filters) -> list[dict[str, Any]]:
    """Per GPU and kind: count, first, last, and min/max/avg/last of each field.

    Whole minutes of the window come from the rollups, its edges from the records.
    """
    ids = gpu_ids(conn, filters)
    span = summaries.Span(filters.start, filters.end)
    by_gpu: dict[int, dict[str, Any]] = {}
    for kind in KINDS.values():
        if filters.metric not in (None, kind.name):
            continue
        measured = [field for field in kind.fields if field.measured]
        found = summaries.summaries(conn, ids, kind.name, [f.column for f in measured], span, None)
        for gpu_id in sorted({gpu for gpu, _, _ in found}):
            by_gpu.setdefault(gpu_id, {})[kind.name] = _kind_stats(kind, measured, gpu_id, found)
    gpu_rows = conn.execute(
        select(gpus).where(gpus.c.id.in_(by_gpu), is_gpu()).order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id)
    )
    return [{**_gpu_out(row), "metrics": by_gpu[row.id]} for row in gpu_rows]


def _kind_stats(kind: Kind, measured: list, gpu_id: int, found: dict) -> dict[str, Any]:
    """One kind of one GPU: count, time range and each field's figures."""
    own = {field.column: found.get((gpu_id, field.column, 0)) for field in measured}
    present = [summary for summary in own.values() if summary is not None]
    return {
        "count": own[count_column(kind.name)][0],
        "first": times.to_iso(min(summary[4] for summary in present)),
        "last": times.to_iso(max(summary[5] for summary in present)),
        "fields": {field.name: _field_stats(own[field.column]) for field in measured},
    }


def _field_stats(summary: list | None) -> dict[str, Any]:
    if summary is None:
        return {"min": None, "max": None, "avg": None, "last": None}
    count, total, low, high, _, _, last = summary
    return {"min": _plain(low), "max": _plain(high), "avg": total / count, "last": _plain(last)}
