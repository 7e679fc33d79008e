"""The service with a change under trial, for benchmarks only: `bench.experiment:app`.

Each BENCH_* variable applies one change that a benchmark report proposes for the
service, so that its effect is measured on the real gunicorn before anyone edits
gpumetrics/. Without any of them this is exactly wsgi:app.

    BENCH_CHUNK_BYTES=262144      gpumetrics.jobs.tail.CHUNK_BYTES (bytes per tail transaction)
    BENCH_SWITCH_INTERVAL=0.001   sys.setswitchinterval in every worker (GIL hand-over)
    BENCH_BATCHED_DECODE=1        ingest.decode_lines parses a chunk as one JSON array
                                  (falls back to line by line when a line is not one record)
    BENCH_WRITE_FLOCK=1           SQLite: Database.writing() holds fcntl.flock(LOCK_EX) on
                                  <database>.write.lock around each write transaction, so a
                                  waiting writer is woken by the kernel the moment the lock is
                                  free instead of polling in SQLite's busy handler
    BENCH_PURGE_KEYSET=1          retention: each batch starts at the newest timestamp the
                                  previous batch deleted (ts >= floor), so on PostgreSQL it does
                                  not walk the dead index entries of every earlier batch
    BENCH_PURGE_ANY=1             retention on PostgreSQL: DELETE ... WHERE id = ANY(ARRAY(SELECT id
                                  ... LIMIT n)) instead of id IN (SELECT ...), which PostgreSQL runs
                                  as a hash semi join over a sequential scan of all of records
    BENCH_PG_SPLIT_GPUS=1         PostgreSQL: store.insert resolves the GPUs (host lock, gpus rows)
                                  in a short transaction of its own, committed before the records
                                  are copied, so the host lock is not held during the COPY
    BENCH_FORGET_BOUNDED=1        retention: forget_empty_gpus probes min(ts) from the cutoff on
                                  (ts >= cutoff) first, and does the full probes (the purged range)
                                  once before taking the host locks, so the locked pass is quick
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from contextlib import contextmanager

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from gpumetrics import ingest, store, times
from gpumetrics.db import Database
from gpumetrics.jobs import retention, tail
from gpumetrics.kinds import KINDS
from gpumetrics.models import gpus, records

if os.environ.get("BENCH_CHUNK_BYTES"):
    tail.CHUNK_BYTES = int(os.environ["BENCH_CHUNK_BYTES"])

if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

_line_by_line = ingest.decode_lines


def batched_decode_lines(data: bytes, line: int = 0) -> ingest.Lines:
    """decode_lines' result, parsing the whole chunk at once when every line is one valid record."""
    raws = data.split(b"\n")
    if raws and raws[-1] == b"":
        raws.pop()
    if not raws or any(not raw.strip() for raw in raws):
        return _line_by_line(data, line)
    try:
        items = json.loads(b"[" + b",".join(raws) + b"]")
    except (ValueError, RecursionError):
        return _line_by_line(data, line)
    if len(items) != len(raws) or not all(isinstance(item, dict) for item in items):
        return _line_by_line(data, line)  # an array on a line, or a line holding two values
    checked = ingest.validate(items)
    if checked.rejected or len(checked.records) != len(items):
        return _line_by_line(data, line)  # rejected lines (or crawler lines) are numbered line by line
    return ingest.Lines(records=checked.records, read=len(raws), last=line + len(raws))


if os.environ.get("BENCH_BATCHED_DECODE"):
    ingest.decode_lines = batched_decode_lines

_plain_writing = Database.writing
_handles = threading.local()  # one open file per thread: flock then excludes threads too


@contextmanager
def _flock_writing(self):
    if not self.is_sqlite:
        with _plain_writing(self) as session:
            yield session
        return
    handle = getattr(_handles, "handle", None)
    if handle is None:
        handle = _handles.handle = open(f"{self.url.database}.write.lock", "a+b")  # noqa: SIM115
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        with _plain_writing(self) as session:
            yield session
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


if os.environ.get("BENCH_WRITE_FLOCK"):
    Database.writing = _flock_writing


def _purge_batch(session, cutoff: int, floor: int | None, batch: int) -> tuple[int, int | None]:
    """store.purge, from `floor` on when given; returns (deleted, the newest timestamp deleted)."""
    where = [records.c.ts < cutoff] + ([records.c.ts >= floor] if floor is not None else [])
    oldest = select(records.c.id).where(*where).order_by(records.c.ts).limit(batch)
    if os.environ.get("BENCH_PURGE_ANY") and session.get_bind().dialect.name == "postgresql":
        bound = "AND ts >= :floor " if floor is not None else ""
        stamps = session.scalars(
            text(
                "DELETE FROM records WHERE id = ANY(ARRAY("
                f"SELECT id FROM records WHERE ts < :cutoff {bound}ORDER BY ts LIMIT :batch)) RETURNING ts"
            ),
            {"cutoff": cutoff, "floor": floor, "batch": batch},
        )
    else:
        stamps = session.scalars(
            delete(records).where(records.c.id.in_(oldest.scalar_subquery())).returning(records.c.ts)
        )
    stamps = list(stamps)
    return len(stamps), (max(stamps) if stamps else floor)


def _firsts(session, gpu_id: int, since: int | None) -> list[int]:
    bound = [records.c.ts >= since] if since is not None else []
    found = [
        session.scalar(
            select(func.min(records.c.ts)).where(records.c.gpu_id == gpu_id, records.c.metric == kind, *bound)
        )
        for kind in KINDS
    ]
    return [first for first in found if first is not None]


def _forget_bounded(session, cutoff: int) -> int:
    """store.forget_empty_gpus, probing from the cutoff on; the full probes only where that finds nothing."""
    gone = 0
    store.lock_hosts(session, session.scalars(select(gpus.c.host).distinct()).all())
    for gpu_id in session.scalars(select(gpus.c.id).order_by(gpus.c.id)).all():
        firsts = _firsts(session, gpu_id, cutoff) or _firsts(session, gpu_id, None)
        if firsts:
            session.execute(update(gpus).where(gpus.c.id == gpu_id).values(first_seen=min(firsts)))
        else:
            gone += session.execute(delete(gpus).where(gpus.c.id == gpu_id)).rowcount
    return gone


def _experimental_purge(db, retention_hours, batch=retention.BATCH_ROWS, pause=retention.PAUSE_SEC) -> int:
    """gpumetrics.jobs.retention.purge with BENCH_PURGE_KEYSET / BENCH_FORGET_BOUNDED applied."""
    keyset, bounded = bool(os.environ.get("BENCH_PURGE_KEYSET")), bool(os.environ.get("BENCH_FORGET_BOUNDED"))
    any_array = bool(os.environ.get("BENCH_PURGE_ANY"))
    started = times.now_micros()
    cutoff = started - int(retention_hours * retention.HOUR_MICROS)
    deleted, batches, floor = 0, 0, None
    while True:
        with db.writing() as session:
            if keyset or any_array:
                gone, new_floor = _purge_batch(session, cutoff, floor, batch)
                floor = new_floor if keyset else None
            else:
                gone = store.purge(session, cutoff, batch)
        deleted += gone
        batches += 1
        if gone < batch:
            break
        time.sleep(pause)
    if bounded:
        with db.reading() as session:  # the slow full probes, without any lock: they warm the index
            for gpu_id in session.scalars(select(gpus.c.id)).all():
                if not _firsts(session, gpu_id, cutoff):
                    _firsts(session, gpu_id, None)
    with db.writing() as session:
        gpus_gone = _forget_bounded(session, cutoff) if bounded else store.forget_empty_gpus(session)
        outcome = {"deleted": deleted, "batches": batches, "gpusForgotten": gpus_gone, "cutoff": times.to_iso(cutoff)}
        retention._record_run(session, "retention", started, outcome)
    return deleted


if any(os.environ.get(f"BENCH_{name}") for name in ("PURGE_KEYSET", "PURGE_ANY", "FORGET_BOUNDED")):
    retention.purge = _experimental_purge

_plain_insert = store.insert


def _split_insert(session, batch) -> tuple[int, int]:
    prepared = batch if isinstance(batch, store.Prepared) else store.prepare(batch)
    bind = session.get_bind()
    if not prepared.rows or bind.dialect.name != "postgresql":
        return _plain_insert(session, prepared)
    with Session(bind) as gpu_session, gpu_session.begin():  # the host lock and gpus rows: short
        ids = store.resolve_gpus(gpu_session, prepared.gpus)
    for row, key in zip(prepared.rows, prepared.keys, strict=True):
        row[0] = ids[key]
    stored = store._copy_insert(session.connection(), prepared.rows)
    return stored, len(prepared.rows) - stored


if os.environ.get("BENCH_PG_SPLIT_GPUS"):
    store.insert = _split_insert

from wsgi import app  # noqa: E402

__all__ = ["app"]
