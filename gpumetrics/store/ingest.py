"""The write pipeline's database step for everything one request, file chunk or import chunk holds.

Metric records and gpumon_client events go into the caller's one transaction together;
POST /metrics, the file tailer and the import command all end here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from .events import EventBatch, prepare_events, store_events
from .write import Batch, Stored, prepare, store_records


def prepare_all(records: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], origins=None) -> tuple:
    """Records and events made into rows before the write transaction."""
    return prepare(records, origins), prepare_events(events)


def store_all(conn: Connection, batch: Batch, events: EventBatch, received_ns: int) -> Stored:
    """Store a prepared batch of records and of events; never commits."""
    records = store_records(conn, batch)
    happened = store_events(conn, events, received_ns)
    return Stored(records.stored + happened.stored, records.duplicates + happened.duplicates, records.refused)
