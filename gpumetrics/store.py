"""Every read and write of records: insert, page, aggregate, gpus, stats, purge.

Functions take a Session and never commit: the caller decides the transaction (one
per request or per job batch). Canonical records come from ingest.py.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy import insert as sql_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from . import times
from .kinds import COLUMNS, FIELD_KINDS, KINDS
from .models import gpus, records

LOCAL_HOST = ""
FIELD_COLUMN = {field.name: column for column, field in COLUMNS.items()}


@dataclass(frozen=True)
class Filters:
    """Which records a read is about; None means no constraint."""

    gpu_index: int | None = None
    host: str | None = None
    uuid: str | None = None
    metric: str | None = None
    start: int | None = None
    end: int | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Filters:
        return cls(
            gpu_index=args.get("gpuIndex"),
            host=args.get("host"),
            uuid=args.get("uuid"),
            metric=args.get("metric"),
            start=args.get("start"),
            end=args.get("end"),
        )


class BadCursor(ValueError):
    """A cursor that this service did not hand out, or for another order."""


# ---- writing ---------------------------------------------------------------------


# The hot path: plain rows in this column order, handed to the driver in one
# executemany (SQLite) or COPY (PostgreSQL). SQLAlchemy's per-row parameter
# processing would cost more than SQLite's own insert.
_ROW_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)
_SLOTS = {
    name: [(_ROW_COLUMNS.index(field.column), field.name) for field in kind.fields] for name, kind in KINDS.items()
}


@lru_cache
def _insert_sql(dialect: Dialect) -> str:
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    columns = ", ".join(dialect.identifier_preparer.quote(name) for name in _ROW_COLUMNS)
    markers = ", ".join([marker] * len(_ROW_COLUMNS))
    return f"INSERT INTO records ({columns}) VALUES ({markers}) ON CONFLICT DO NOTHING"


@dataclass
class Prepared:
    """A batch turned into rows, done before the write transaction so it holds the lock briefly."""

    rows: list[list[Any]]  # slot 0 is filled with the GPU id inside the transaction
    keys: list[tuple]  # the GPU key of each row
    gpus: dict[tuple, dict[str, Any]]  # per GPU key: name, first and last timestamp


def prepare(batch: Sequence[dict[str, Any]]) -> Prepared:
    """Rows and per-GPU time ranges of canonical records; needs no database."""
    empty = [None] * len(_ROW_COLUMNS)
    rows, keys = [], []
    seen: dict[tuple, dict[str, Any]] = {}
    for record in batch:
        row = empty.copy()
        metric, ts = record["metric"], record["timestamp"]
        row[1], row[2] = metric, ts
        for slot, name in _SLOTS[metric]:
            row[slot] = record.get(name)
        rows.append(row)
        key = (record.get("host") or LOCAL_HOST, record.get("gpuIndex"), record.get("uuid"))
        keys.append(key)
        known = seen.get(key)
        if known is None:
            seen[key] = {"name": record.get("name"), "first": ts, "last": ts}
        else:
            if ts < known["first"]:
                known["first"] = ts
            elif ts > known["last"]:
                known["last"] = ts
            known["name"] = record.get("name") or known["name"]
    return Prepared(rows, keys, seen)


def insert(session: Session, batch: Sequence[dict[str, Any]] | Prepared) -> tuple[int, int]:
    """Store canonical records (or a prepared batch); returns (stored, duplicates). Idempotent."""
    prepared = batch if isinstance(batch, Prepared) else prepare(batch)
    if not prepared.rows:
        return 0, 0
    ids = resolve_gpus(session, prepared.gpus)
    rows = prepared.rows
    for row, key in zip(rows, prepared.keys, strict=True):
        row[0] = ids[key]
    connection = session.connection()  # begins the transaction (BEGIN IMMEDIATE on SQLite)
    if connection.dialect.name == "postgresql":
        stored = _copy_insert(connection, rows)
    else:
        cursor = connection.connection.driver_connection.cursor()
        cursor.executemany(_insert_sql(connection.dialect), rows)
        stored = cursor.rowcount
        cursor.close()
    return stored, len(rows) - stored


def _copy_insert(connection, rows: list[tuple]) -> int:
    """PostgreSQL: COPY into a session-local staging table, then one INSERT ... SELECT.

    1.5 times the rate of executemany (bench/pg_insert_paths.py), and as idempotent.
    """
    columns = ", ".join(_ROW_COLUMNS)
    with connection.connection.driver_connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS records_staging ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM records WITH NO DATA"
        )
        with cursor.copy(f"COPY records_staging ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO records ({columns}) SELECT {columns} FROM records_staging ON CONFLICT DO NOTHING")
        stored = cursor.rowcount
        cursor.execute("TRUNCATE records_staging")  # the same transaction may insert again
        return stored


def lock_hosts(session: Session, hosts: Iterable[str]) -> None:
    """PostgreSQL: one writer of a host's GPUs at a time, across replicas.

    Taken in a fixed order by every writer of the gpus table, so that two transactions
    never wait on each other (SQLite's single writer needs nothing of the kind).
    """
    if session.get_bind().dialect.name == "postgresql":
        for host in sorted(set(hosts)):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(host.encode())})


def resolve_gpus(session: Session, seen: dict[tuple, dict[str, Any]]) -> dict[tuple, int]:
    """Find or create the GPU of every key; keep its uuid, name and seen-range current.

    A GPU is known by (host, index) when the index is given, else by (host, uuid). A
    record with both ties them: a GPU first seen by UUID alone gets its index, and its
    records move to the GPU of that index if there already is one.
    """
    hosts = {host for host, _, _ in seen}
    lock_hosts(session, hosts)
    rows = [row._asdict() for row in session.execute(select(gpus).where(gpus.c.host.in_(hosts)))]
    resolved: dict[tuple, dict[str, Any]] = {}
    for (host, index, uuid), new in seen.items():
        gpu = _match(session, rows, host, index, uuid)
        if gpu is None:
            gpu = {"host": host, "gpu_index": index, "uuid": uuid, "name": new["name"]}
            gpu["first_seen"], gpu["last_seen"] = new["first"], new["last"]
            gpu["id"] = session.execute(sql_insert(gpus).values(**{k: v for k, v in gpu.items() if k != "id"}))
            gpu["id"] = gpu["id"].inserted_primary_key[0]
            rows.append(gpu)
        else:
            changes = {}
            if new["name"] and new["name"] != gpu["name"]:
                changes["name"] = new["name"]
            if new["first"] < gpu["first_seen"]:
                changes["first_seen"] = new["first"]
            if new["last"] > gpu["last_seen"]:
                changes["last_seen"] = new["last"]
            _update_gpu(session, gpu, changes)
        resolved[(host, index, uuid)] = gpu
    ids = {}
    for key, gpu in resolved.items():
        while "merged_into" in gpu:
            gpu = gpu["merged_into"]
        ids[key] = gpu["id"]
    return ids


def _update_gpu(session: Session, gpu: dict[str, Any], changes: dict[str, Any]) -> None:
    if changes:
        session.execute(update(gpus).where(gpus.c.id == gpu["id"]).values(**changes))
        gpu.update(changes)


def _match(session: Session, rows: list[dict[str, Any]], host: str, index: int | None, uuid: str | None):
    """The known GPU a (host, index, uuid) names, tying index and UUID together."""
    by_uuid = [g for g in rows if uuid is not None and g["host"] == host and g["uuid"] == uuid]
    by_uuid.sort(key=lambda g: g["last_seen"], reverse=True)
    if index is None:
        return by_uuid[0] if by_uuid else None
    gpu = next((g for g in rows if g["host"] == host and g["gpu_index"] == index), None)
    unindexed = next((g for g in by_uuid if g["gpu_index"] is None), None)
    if gpu is None:
        if unindexed is not None:
            _update_gpu(session, unindexed, {"gpu_index": index})
        return unindexed
    if uuid is not None and gpu["uuid"] != uuid:
        _update_gpu(session, gpu, {"uuid": uuid})
    if unindexed is not None:
        _merge(session, rows, into=gpu, other=unindexed)
    return gpu


def _merge(session: Session, rows: list[dict[str, Any]], into: dict[str, Any], other: dict[str, Any]) -> None:
    """Move the records of a GPU known only by UUID to the GPU of its index."""
    twin = records.alias("twin")
    same_sample = (
        select(twin.c.id)
        .where(
            twin.c.gpu_id == into["id"],
            twin.c.metric == records.c.metric,
            twin.c.ts == records.c.ts,
            func.coalesce(twin.c.pid, -1) == func.coalesce(records.c.pid, -1),
        )
        .exists()
    )
    session.execute(delete(records).where(records.c.gpu_id == other["id"], same_sample))
    session.execute(update(records).where(records.c.gpu_id == other["id"]).values(gpu_id=into["id"]))
    session.execute(delete(gpus).where(gpus.c.id == other["id"]))
    rows.remove(other)
    other["merged_into"] = into  # keys of this batch resolved to `other` now mean `into`
    _update_gpu(
        session,
        into,
        {
            "first_seen": min(into["first_seen"], other["first_seen"]),
            "last_seen": max(into["last_seen"], other["last_seen"]),
            "name": into["name"] or other["name"],
        },
    )


# ---- reading ---------------------------------------------------------------------


def _gpu_ids(session: Session, filters: Filters) -> list[int] | None:
    """Ids of the GPUs the filters name, or None when they name no GPU."""
    conditions = []
    if filters.host is not None:
        conditions.append(gpus.c.host == filters.host)
    if filters.gpu_index is not None:
        conditions.append(gpus.c.gpu_index == filters.gpu_index)
    if filters.uuid is not None:
        conditions.append(gpus.c.uuid == filters.uuid)
    if not conditions:
        return None
    return list(session.scalars(select(gpus.c.id).where(*conditions)))


def _where(session: Session, filters: Filters, metrics: Sequence[str] | None = None) -> list:
    """Record conditions, phrased so every per-GPU read ranges over the identity index."""
    conditions = []
    ids = _gpu_ids(session, filters)
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
    """A stored row (joined with its GPU) in the shape it was ingested in."""
    out: dict[str, Any] = {"timestamp": times.to_iso(row.ts), "gpuIndex": row.gpu_index, "metric": row.metric}
    if row.host:
        out["host"] = row.host
    if row.uuid is not None:
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
    if not all(-(2**63) <= number < 2**63 for number in position):
        raise BadCursor("Not a cursor this service handed out.")
    if made_for != order:
        raise BadCursor(f"This cursor continues order={made_for}.")
    return position


def page(
    session: Session, filters: Filters, limit: int, order: str = "asc", cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of records in (timestamp, id) order, and the cursor of the next page.

    Keyset pagination: a page starts strictly after the last (timestamp, id) handed
    out, so pages never repeat or skip a record, however many arrive in between.
    """
    conditions = _where(session, filters)
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
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [record_out(row) for row in rows]
    next_cursor = _cursor(order, rows[-1].ts, rows[-1].id) if more else None
    return items, next_cursor


def aggregate(session: Session, filters: Filters, function: str, field: str | None) -> tuple[float | None, int]:
    """(value, count) of one aggregate over the filtered records; value None if none."""
    if field is None:
        count = session.scalar(select(func.count()).select_from(records).where(and_(True, *_where(session, filters))))
        return (float(count) if function == "count" else None), count
    column = records.c[FIELD_COLUMN[field]]
    conditions = _where(session, filters, FIELD_KINDS[field])
    sql_function = {"avg": func.avg, "min": func.min, "max": func.max, "sum": func.sum, "count": func.count}[function]
    if function == "sum" and session.get_bind().dialect.name == "sqlite":
        sql_function = func.total  # a float sum: SQLite's integer sum() raises on overflow
    value, count = session.execute(
        select(sql_function(column), func.count(column)).where(and_(True, *conditions))
    ).one()
    if count == 0:
        return None, 0
    return float(value), count


def gpu_list(session: Session) -> list[dict[str, Any]]:
    """Every GPU that has records, with the time range they cover."""
    rows = session.execute(select(gpus).order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id))
    return [
        {**_gpu_out(row), "firstSeen": times.to_iso(row.first_seen), "lastSeen": times.to_iso(row.last_seen)}
        for row in rows
    ]


def _gpu_out(row: Any) -> dict[str, Any]:
    return {"gpuIndex": row.gpu_index, "host": row.host or None, "uuid": row.uuid, "name": row.name}


def stats(session: Session, filters: Filters) -> list[dict[str, Any]]:
    """Per GPU and kind: count, first, last, and min/max/avg/last of each field.

    One grouped query per kind, over that kind's own columns: half the work of one
    query over every column (bench/query.py).
    """
    window = _where(session, filters)
    by_gpu: dict[int, dict[str, Any]] = {}
    for kind in KINDS.values():
        if filters.metric not in (None, kind.name):
            continue
        measured = [field for field in kind.fields if field.measured]
        columns = [records.c[field.column] for field in measured]
        conditions = and_(records.c.metric == kind.name, *window)
        summary = [aggregate(column) for column in columns for aggregate in (func.min, func.max, func.avg)]
        grouped = session.execute(
            select(records.c.gpu_id, func.count(), func.min(records.c.ts), func.max(records.c.ts), *summary)
            .where(conditions)
            .group_by(records.c.gpu_id)
        ).all()
        if not grouped:
            continue
        newest = (
            select(records.c.gpu_id, func.max(records.c.ts).label("ts"))
            .where(conditions)
            .group_by(records.c.gpu_id)
            .subquery()
        )
        last_values = {
            row[0]: row[1:]  # ordered by id: the highest id wins among equal times
            for row in session.execute(
                select(records.c.gpu_id, *columns)
                .join(newest, and_(records.c.gpu_id == newest.c.gpu_id, records.c.ts == newest.c.ts))
                .where(records.c.metric == kind.name)
                .order_by(records.c.id)
            )
        }
        for gpu_id, count, first, last, *values in grouped:
            by_gpu.setdefault(gpu_id, {})[kind.name] = {
                "count": count,
                "first": times.to_iso(first),
                "last": times.to_iso(last),
                "fields": {
                    field.name: {
                        "min": _plain(values[3 * i]),
                        "max": _plain(values[3 * i + 1]),
                        "avg": None if values[3 * i + 2] is None else float(values[3 * i + 2]),  # PG: numeric
                        "last": _plain(last_values[gpu_id][i]),
                    }
                    for i, field in enumerate(measured)
                },
            }
    gpu_rows = session.execute(
        select(gpus).where(gpus.c.id.in_(by_gpu)).order_by(gpus.c.host, gpus.c.gpu_index, gpus.c.id)
    )
    return [{**_gpu_out(row), "metrics": by_gpu[row.id]} for row in gpu_rows]


# ---- retention -------------------------------------------------------------------


def purge(session: Session, older_than: int, batch: int) -> int:
    """Delete up to `batch` records older than `older_than`; returns how many went."""
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL plans `id IN (subquery)` as a scan of the whole table, each batch;
        # `id = ANY(ARRAY(subquery))` walks the ts index (26 times faster, bench/retention.py).
        sql = (
            "DELETE FROM records WHERE id = ANY(ARRAY(SELECT id FROM records WHERE ts < :cutoff ORDER BY ts LIMIT :n))"
        )
        return session.execute(text(sql), {"cutoff": older_than, "n": batch}).rowcount
    oldest = select(records.c.id).where(records.c.ts < older_than).order_by(records.c.ts).limit(batch)
    return session.execute(delete(records).where(records.c.id.in_(oldest.scalar_subquery()))).rowcount


def _oldest(session: Session, gpu_id: int, since: int | None) -> int | None:
    """A GPU's oldest record (at or after `since`), kind by kind: one index probe each."""
    bound = [] if since is None else [records.c.ts >= since]
    firsts = [
        session.scalar(
            select(func.min(records.c.ts)).where(records.c.gpu_id == gpu_id, records.c.metric == kind, *bound)
        )
        for kind in KINDS
    ]
    return min((first for first in firsts if first is not None), default=None)


def oldest_by_gpu(session: Session, since: int | None = None) -> dict[int, int | None]:
    """Each GPU's oldest record (None: it has none), probing from `since` on first.

    Probing from where retention cut avoids walking the index entries of the rows just
    deleted, which PostgreSQL keeps until it vacuums.
    """
    return {
        gpu_id: (since is not None and _oldest(session, gpu_id, since)) or _oldest(session, gpu_id, None)
        for gpu_id in session.scalars(select(gpus.c.id).order_by(gpus.c.id)).all()
    }


def forget_empty_gpus(session: Session, since: int | None = None) -> int:
    """Drop GPUs with no records left, and move each GPU's firstSeen to its oldest record."""
    gone = 0
    lock_hosts(session, session.scalars(select(gpus.c.host).distinct()).all())
    for gpu_id, first in oldest_by_gpu(session, since).items():
        if first is not None:
            session.execute(update(gpus).where(gpus.c.id == gpu_id).values(first_seen=first))
        else:
            gone += session.execute(delete(gpus).where(gpus.c.id == gpu_id)).rowcount
    return gone
