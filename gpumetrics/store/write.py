"""The write pipeline's last step: canonical records into rows, stored in the caller's transaction.

POST /metrics, the file tailer and the import command all do the same: validate
(records/), `prepare()` outside the write transaction so it holds the lock briefly,
then `store_records()` inside it, beside whatever else the caller writes (a file's
checkpoint). Storing is idempotent: a record already stored is counted as a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..db import backend_of
from ..kinds import COLUMNS, KINDS
from . import latest, rollups, sealed
from .fleet import LOCAL_HOST, GpuKey, Sighting, resolve_gpus

# The hot path: plain rows in this column order, handed to the driver in one
# executemany (SQLite) or COPY (PostgreSQL).
ROW_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)
IDENTITY = ("gpu_id", "metric", "ts", "pid")  # what makes a record a duplicate (the unique index)
_IDENTITY_AT = tuple(ROW_COLUMNS.index(name) for name in IDENTITY)
_SLOTS = {
    name: [(ROW_COLUMNS.index(field.column) - 1, field.name) for field in kind.fields] for name, kind in KINDS.items()
}
_EMPTY = [None] * (len(ROW_COLUMNS) - 1)


@dataclass(frozen=True)
class Batch:
    """Records as rows without their GPU id, and what they say of each GPU."""

    rows: list[list[Any]]  # ROW_COLUMNS without gpu_id
    keys: list[GpuKey]  # the GPU key of each row
    sightings: dict[GpuKey, Sighting]
    summaries: dict[tuple, rollups.Summary]  # the rows' minute rollups, by GPU key, if all are new
    origins: list[int]  # the input item each row came from


@dataclass(frozen=True)
class Stored:
    stored: int = 0
    duplicates: int = 0
    refused: dict[int, str] = field(default_factory=dict)  # input item -> why it was not stored


def prepare(records: Sequence[dict[str, Any]], origins: Sequence[int] | None = None) -> Batch:
    """Rows and per-GPU time ranges of canonical records; needs no database."""
    rows, keys = [], []
    sightings: dict[GpuKey, Sighting] = {}
    for record in records:
        metric, ts = record["metric"], record["timestamp"]
        row = _EMPTY.copy()
        row[0], row[1] = metric, ts
        for slot, name in _SLOTS[metric]:
            row[slot] = record.get(name)
        rows.append(row)
        key = GpuKey(record.get("host") or LOCAL_HOST, record.get("gpuIndex"), record.get("uuid") or None)
        keys.append(key)
        seen = sightings.get(key)
        if seen is None:
            sightings[key] = Sighting(record.get("name"), ts, ts)
        else:
            seen.see(record.get("name"), ts)
    origins = list(origins) if origins is not None else list(range(len(rows)))
    return Batch(rows, keys, sightings, rollups.summarize(keys, rows, ROW_COLUMNS[1:]), origins)


def store_records(conn: Connection, batch: Batch) -> Stored:
    """Store a prepared batch in the connection's transaction; never commits."""
    if not batch.rows:
        return Stored()
    ids = resolve_gpus(conn, batch.sightings)
    rows = [[ids[key], *row] for key, row in zip(batch.keys, batch.rows, strict=True)]
    refused = sealed.refused(conn, rows, ROW_COLUMNS)
    if refused:
        rows = [row for position, row in enumerate(rows) if position not in refused]
    added = backend_of(conn).insert_rows(conn, "records", ROW_COLUMNS, rows, IDENTITY) if rows else []
    if added is None and not refused:  # every row was new: the rollups summed before the lock hold
        rollups.apply(conn, rollups.by_gpu_id(batch.summaries, ids))
        count = len(rows)
    else:
        fresh = rows if added is None else _added_rows(rows, added)
        rollups.apply(conn, rollups.summarize([row[0] for row in fresh], fresh, ROW_COLUMNS))
        count = len(fresh)
    latest.apply(conn, latest.newest(rows, ROW_COLUMNS))
    why = {batch.origins[position]: reason for position, reason in refused.items()}
    return Stored(count, len(rows) - count, why)


def _added_rows(rows: list[list[Any]], added: list[tuple]) -> list[list[Any]]:
    """The rows the insert added: the first row of each identity it reports."""
    wanted = {tuple(identity) for identity in added}
    fresh = []
    for row in rows:
        identity = tuple(row[i] for i in _IDENTITY_AT)
        if identity in wanted:
            wanted.discard(identity)
            fresh.append(row)
    return fresh
