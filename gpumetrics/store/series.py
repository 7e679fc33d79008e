"""Chart queries: one aggregate per time bucket, per GPU, per host or for the whole fleet.

Percentiles are exact: numpy.percentile's default (linear interpolation between the
closest ranks) over the bucket's records. They need the records themselves, so they
answer only within the records' window; the other aggregates come from the rollups
wherever whole minutes allow, and reach as far back as the rollups are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from .. import times
from ..db.tables import gpus
from . import summaries
from .queries import FIELD_COLUMN, Filters, count_column, gpu_ids
from .rollups import Summary, merge

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
AGGREGATES = ("avg", "min", "max", "sum", "count", "last", *PERCENTILES)
GROUPS = ("gpu", "host", "none")


class RecordsExpired(ValueError):
    """A percentile was asked of a window whose records are no longer kept."""


@dataclass(frozen=True)
class Request:
    metric: str
    field: str | None  # None: count records
    aggregate: str
    step: int  # microseconds
    start: int
    end: int
    filters: Filters
    group_by: str = "gpu"
    records_since: int | None = None  # the oldest time records are kept from; None: all kept


def percentile(values: list[float], q: float) -> float:
    """numpy.percentile(values, q) with its default method, linear, step by step as numpy does it."""
    ordered = sorted(values)
    index = (len(ordered) - 1) * (q / 100)
    low = math.floor(index)
    below, above = ordered[low], ordered[min(low + 1, len(ordered) - 1)]
    fraction, difference = index - low, above - below
    return above - difference * (1 - fraction) if fraction >= 0.5 else below + difference * fraction


def _value(summary: Summary, aggregate: str) -> float:
    count, total, low, high, _, _, last = summary
    return {"avg": total / count, "min": low, "max": high, "sum": total, "count": count, "last": last}[aggregate]


def series(conn: Connection, request: Request) -> list[dict[str, Any]]:
    """Every series of the request, ordered by host then index, with their points ascending."""
    column = count_column(request.metric) if request.field is None else FIELD_COLUMN[request.field]
    ids = gpu_ids(conn, request.filters)
    span = summaries.Span(request.start, request.end)
    if request.aggregate in PERCENTILES:
        if request.records_since is not None and request.start < request.records_since:
            raise RecordsExpired(times.to_iso(request.records_since))
        pooled = summaries.values(conn, ids, request.metric, column, span, request.step)
        found = {gpu for gpu, _ in pooled}
    else:
        last = request.aggregate == "last"
        summed = summaries.summaries(conn, ids, request.metric, [column], span, request.step, with_last=last)
        found = {gpu for gpu, _, _ in summed}
    groups = _groups(conn, found, request.group_by)
    if request.aggregate in PERCENTILES:
        points = _percentile_points(pooled, groups, PERCENTILES[request.aggregate])
    else:
        points = _points({(gpu, bucket): s for (gpu, _, bucket), s in summed.items()}, groups, request.aggregate)
    return [{**labels, "points": points[group]} for group, labels in _labels(conn, groups, request.group_by)]


def _groups(conn: Connection, gpu_ids: set[int], group_by: str) -> dict[int, Any]:
    """Each GPU's group: itself, its host, or the one group."""
    if group_by == "gpu":
        return {gpu_id: gpu_id for gpu_id in gpu_ids}
    if group_by == "none":
        return dict.fromkeys(gpu_ids, None)
    rows = conn.execute(select(gpus.c.id, gpus.c.host).where(gpus.c.id.in_(gpu_ids)))
    return {gpu_id: host for gpu_id, host in rows}


def _points(summed: dict[tuple[int, int], Summary], groups: dict[int, Any], aggregate: str) -> dict[Any, list]:
    merged: dict[tuple[Any, int], Summary] = {}
    for (gpu_id, bucket), summary in summed.items():
        key = (groups[gpu_id], bucket)
        if key in merged:
            merge(merged[key], summary)
        else:
            merged[key] = list(summary)
    out: dict[Any, list] = {}
    for (group, bucket), summary in sorted(merged.items(), key=lambda item: item[0][1]):
        out.setdefault(group, []).append([times.to_iso(bucket), _plain(_value(summary, aggregate))])
    return out


def _percentile_points(pooled: dict[tuple[int, int], list[float]], groups: dict[int, Any], q: float) -> dict:
    merged: dict[tuple[Any, int], list[float]] = {}
    for (gpu_id, bucket), values in pooled.items():
        merged.setdefault((groups[gpu_id], bucket), []).extend(values)
    out: dict[Any, list] = {}
    for (group, bucket), values in sorted(merged.items(), key=lambda item: item[0][1]):
        out.setdefault(group, []).append([times.to_iso(bucket), _plain(percentile(values, q))])
    return out


def _labels(conn: Connection, groups: dict[int, Any], group_by: str) -> Sequence[tuple[Any, dict[str, Any]]]:
    """(group, labels) in the answer's order: by host, then index."""
    if group_by == "none":
        return [(None, {})] if groups else []
    if group_by == "host":
        return [(host, {"host": host or None}) for host in sorted(set(groups.values()))]
    rows = conn.execute(
        select(gpus).where(gpus.c.id.in_(list(groups))).order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id)
    )
    return [
        (row.id, {"host": row.host or None, "gpuIndex": row.gpu_index, "uuid": row.uuid, "name": row.name})
        for row in rows
    ]


def _plain(value: float) -> float | int:
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value
