"""The write pipeline's last step: canonical records into rows, stored in the caller's transaction.

POST /metrics, the file tailer and the import command all do the same: validate
(records/), `prepare()` outside the write transaction so it holds the lock briefly,
then `store_records()` inside it, beside whatever else the caller writes (a file's
checkpoint). Storing is idempotent: a record already stored is counted as a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ..db import backend_of
from ..kinds import COLUMNS, KINDS
from .fleet import LOCAL_HOST, GpuKey, Sighting, resolve_gpus

# The hot path: plain rows in this column order, handed to the driver in one
# executemany (SQLite) or COPY (PostgreSQL).
ROW_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)
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


@dataclass(frozen=True)
class Stored:
    stored: int = 0
    duplicates: int = 0


def prepare(records: Sequence[dict[str, Any]]) -> Batch:
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
    return Batch(rows, keys, sightings)


def store_records(session: Session, batch: Batch) -> Stored:
    """Store a prepared batch in the session's transaction; never commits."""
    if not batch.rows:
        return Stored()
    ids = resolve_gpus(session, batch.sightings)
    rows = [[ids[key], *row] for key, row in zip(batch.keys, batch.rows, strict=True)]
    added = backend_of(session).insert_rows(session.connection(), "records", ROW_COLUMNS, rows)
    return Stored(added, len(rows) - added)
