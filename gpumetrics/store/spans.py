"""Reads of gpumon_client's events: spans, the kernel (or scope) summary, processes.

Times are mapped to UTC when read, with each host boot's best offset (store/clocks.py),
so the events of one host keep their order however the estimate improves.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Select, and_, case, func, literal, or_, select

from .. import times
from ..db import backend_of
from ..db.tables import host_clocks, processes, span_names, spans
from ..kinds import INT64_MAX
from . import names

FOREVER = 2**62  # the end of a scope that is still open
OK = "cudaSuccess"


@dataclass(frozen=True)
class SpanFilters:
    host: str | None = None
    app: str | None = None
    pid: int | None = None
    type: str | None = None
    name: str | None = None
    tag: str | None = None
    start: int | None = None  # epoch microseconds: spans that overlap [start, end]
    end: int | None = None
    cuda_error: str | None = None  # "failed": anything but cudaSuccess

    @classmethod
    def from_args(cls, args: dict[str, Any], **defaults: Any) -> SpanFilters:
        given = {field: args.get(name) for field, name in _ARGS.items()}
        return cls(**{**defaults, **{k: v for k, v in given.items() if v is not None}})


_ARGS = {"host": "host", "app": "app", "pid": "pid", "type": "type", "name": "name", "tag": "tag"}
_ARGS |= {"start": "start", "end": "end", "cuda_error": "cudaError"}


class BadCursor(ValueError):
    """A cursor that this service did not hand out."""


def _wall_start():
    return host_clocks.c.offset_ns + spans.c.start_ns


def _conditions(filters: SpanFilters) -> list:
    c = spans.c
    out = []
    for column, value in ((c.host, filters.host), (c.app, filters.app), (c.pid, filters.pid)):
        if value is not None:
            out.append(column == value)
    for column, value in ((c.type, filters.type), (c.name, filters.name), (c.tag, filters.tag)):
        if value is not None:
            out.append(column == value)
    if filters.cuda_error == "failed":
        out += [c.type == "kernel", c.cuda_error != OK]
    elif filters.cuda_error is not None:
        out.append(c.cuda_error == filters.cuda_error)
    if filters.end is not None:  # the end is a whole microsecond, inclusive
        out.append(_wall_start() <= _ns(filters.end) + 999)
    if filters.start is not None:
        out.append(host_clocks.c.offset_ns + func.coalesce(c.end_ns, FOREVER) >= _ns(filters.start))
    return out


def _ns(micros: int) -> int:
    """Microseconds of UTC to nanoseconds, within what a BIGINT holds (years 1 to 9999 are not)."""
    return max(-FOREVER, min(micros * 1000, FOREVER))


def _joined(*columns) -> Select:
    return select(*columns).select_from(
        spans.join(host_clocks, and_(host_clocks.c.host == spans.c.host, host_clocks.c.boot == spans.c.boot))
    )


def _iso(ns: int | None) -> str | None:
    return None if ns is None else times.to_iso(ns // 1000)


def span_out(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": row.type,
        "name": row.name,
        "tag": row.tag or None,
        "host": row.host or None,
        "pid": row.pid,
        "app": row.app,
        "start": _iso(row.offset_ns + row.start_ns),
        "end": None if row.end_ns is None else _iso(row.offset_ns + row.end_ns),
        "durationNs": row.duration_ns,
        "startNs": row.start_ns,
        "endNs": row.end_ns,
    }
    if row.type == "kernel":
        out |= {
            "grid": [row.grid_x, row.grid_y, row.grid_z],
            "block": [row.block_x, row.block_y, row.block_z],
            "sharedMemBytes": row.shared_mem_bytes,
            "cudaError": row.cuda_error,
        }
    else:
        out["state"] = row.state
        out["memoryBegin"] = None if row.memory_begin is None else json.loads(row.memory_begin)
        out["memoryEnd"] = None if row.memory_end is None else json.loads(row.memory_end)
    return out


def _cursor(wall_ns: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"spans:{wall_ns}:{row_id}".encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        kind, wall, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        position = int(wall), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("Not a cursor this service handed out.") from None
    if kind != "spans" or not all(-INT64_MAX - 1 <= n <= INT64_MAX for n in position):
        raise BadCursor("Not a cursor this service handed out.")
    return position


def page(conn: Connection, filters: SpanFilters, limit: int, cursor: str | None) -> tuple[list, str | None]:
    """Spans in order of their start, a page at a time (keyset on start and id)."""
    wall = _wall_start()
    conditions = _conditions(filters)
    if cursor is not None:
        after_wall, after_id = _parse_cursor(cursor)
        conditions += [wall >= after_wall, or_(wall > after_wall, spans.c.id > after_id)]
    query = _joined(spans, host_clocks.c.offset_ns).where(*conditions).order_by(wall, spans.c.id).limit(limit + 1)
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _cursor(rows[-1].offset_ns + rows[-1].start_ns, rows[-1].id) if more else None
    return [span_out(row) for row in rows], next_cursor


def summary(conn: Connection, filters: SpanFilters) -> list[dict[str, Any]]:
    """Per name: share of the total time, total, instances, average, median, extremes,
    standard deviation (population, numpy.std's) and failed launches; by total time.

    Without host, app, pid, tag, time or error filters it reads the names' own rows
    (store/names.py); otherwise it sums the spans the filters name.
    """
    kind = filters.type or "kernel"
    wide = SpanFilters(type=filters.type, name=filters.name)
    found = _by_name(conn, kind, filters.name) if filters == wide else _by_spans(conn, filters)
    grand = sum(item["totalNs"] for item in found) or 1
    for item in found:
        item["timePercent"] = 100 * item["totalNs"] / grand
    return sorted(found, key=lambda item: (-item["totalNs"], item["name"]))


def _median(conn: Connection, query: Select, count: int) -> float:
    middle = conn.scalars(query.order_by(spans.c.duration_ns).limit(2).offset((count - 1) // 2)).all()
    return middle[0] if count % 2 else (middle[0] + middle[1]) / 2


def _item(name: str, count: int, total: int, low: int, high: int, stddev: float, failed: int, median: float) -> dict:
    return {
        "name": name,
        "totalNs": total,
        "instances": count,
        "avgNs": total / count,
        "medianNs": median,
        "minNs": low,
        "maxNs": high,
        "stddevNs": stddev,
        "failed": failed,
    }


def _by_name(conn: Connection, kind: str, name: str | None) -> list[dict[str, Any]]:
    out = []
    for row in names.read(conn, kind, name):
        timed = select(spans.c.duration_ns).where(spans.c.name_key == row.name_key, spans.c.duration_ns.is_not(None))
        stddev = math.sqrt(max(row.m2, 0.0) / row.count)
        median = _median(conn, timed, row.count)
        out.append(_item(row.name, row.count, row.total, row.min, row.max, stddev, row.failed, median))
    return out


def _by_spans(conn: Connection, filters: SpanFilters) -> list[dict[str, Any]]:
    """One grouped query over the filtered spans, then an OFFSET query a name for its median.

    The type and name are those of span_names, joined (a name_key implies both), so that
    with a host (and pid) filter both queries walk ix_spans_host_name_key_duration_ns
    alone, never a spans row: its entries hold pid and cuda_error too.
    """
    c, n = spans.c, span_names.c
    conditions = [*_conditions(replace(filters, type=None, name=None)), c.duration_ns.is_not(None)]
    named = [n.type == (filters.type or "kernel")] + ([] if filters.name is None else [n.name == filters.name])
    failed = func.sum(case((c.cuda_error != OK, 1), else_=0))  # a scope's is null
    squares = backend_of(conn).sum(literal(1.0) * c.duration_ns * c.duration_ns)
    timed = filters.start is not None or filters.end is not None
    source = _joined if timed else (lambda *columns: select(*columns).select_from(spans))
    grouped = conn.execute(
        source(c.name_key, n.name, func.count(), func.sum(c.duration_ns), func.min(c.duration_ns))
        .add_columns(func.max(c.duration_ns), squares, failed)
        .join(span_names, n.name_key == c.name_key)
        .where(*conditions, *named)
        .group_by(c.name_key, n.name)
    ).all()
    out = []
    for name_key, name, count, total, low, high, square_sum, failures in grouped:
        count, total = int(count), int(total)
        stddev = math.sqrt(max(float(square_sum) / count - (total / count) ** 2, 0.0))
        median = _median(conn, source(c.duration_ns).where(*conditions, c.name_key == name_key), count)
        out.append(_item(name, count, total, low, high, stddev, int(failures), median))
    return out


def process_list(conn: Connection, host: str | None = None, app: str | None = None) -> list[dict[str, Any]]:
    """Every process that sent events, with its app, time range, shutdown and spans."""
    p = processes.c
    counted = (
        select(func.count())
        .where(spans.c.host == p.host, spans.c.pid == p.pid, spans.c.boot == p.boot)
        .scalar_subquery()
    )
    query = (
        select(processes, host_clocks.c.offset_ns, counted.label("spans"))
        .join(host_clocks, and_(host_clocks.c.host == p.host, host_clocks.c.boot == p.boot))
        .order_by(host_clocks.c.offset_ns + p.first_ns, p.host, p.pid)
    )
    if host is not None:
        query = query.where(p.host == host)
    if app is not None:
        query = query.where(p.app == app)
    return [
        {
            "host": row.host or None,
            "pid": row.pid,
            "app": row.app,
            "firstSeen": _iso(row.offset_ns + row.first_ns),
            "lastSeen": _iso(row.offset_ns + row.last_ns),
            "shutDown": row.shutdown_ns is not None,
            "spans": row.spans,
        }
        for row in conn.execute(query)
    ]
