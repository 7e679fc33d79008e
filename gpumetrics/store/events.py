"""gpumon_client's events into the database, in the caller's transaction.

Kernels and scopes become spans; a scope_begin opens one and its scope_end (matched by
host, pid, name, tag and start) closes it; a shutdown closes the process's open scopes
as abandoned. Scope samples keep their device memory. Every event updates its process.
A system_sample becomes the GPU records of its devices, stored like the crawler's own
gpu records. Each event gets its host's boot (store/clocks.py); a re-sent event is a
duplicate, whatever the clock estimate has become since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from ..db import backend_of
from ..records import crawler
from ..records.events import own_time, snapshots
from . import clocks, names
from .fleet import LOCAL_HOST
from .write import Stored, prepare, store_records

SPAN_COLUMNS = (
    "host", "boot", "pid", "app", "type", "name", "tag", "key", "name_key", "start_ns", "end_ns", "duration_ns",
    "state", "grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem_bytes", "cuda_error",
    "memory_begin", "memory_end",
)  # fmt: skip


@lru_cache(maxsize=1 << 16)
def key(*parts: str) -> int:
    """A signed 64-bit hash of texts: what indexes hold instead of long names."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _memory(event: dict[str, Any]) -> str | None:
    found = snapshots(event)
    return None if found is None else json.dumps(found, separators=(",", ":"))


def _span(event: dict[str, Any]) -> tuple:
    """A span row without its host and boot (the write finds those)."""
    kind = "kernel" if event["type"] == "kernel" else "scope"
    name, tag = (event["kernel"] if kind == "kernel" else event["name"]), event.get("tag") or ""
    start = event.get("ts_start_ns", event.get("ts_ns"))
    grid, block = event.get("grid") or (None,) * 3, event.get("block") or (None,) * 3
    opening = event["type"] == "scope_begin"
    return (
        event["pid"], event["app"], kind, name, tag, key(kind, name, tag), key(kind, name), start,
        event.get("ts_end_ns"), event.get("duration_ns"), "open" if opening else "closed", *grid, *block,
        event.get("shared_mem_bytes"), event.get("cuda_error"), _memory(event) if opening else None,
        None if opening else _memory(event),
    )  # fmt: skip


@dataclass(frozen=True)
class EventBatch:
    """Events made into rows before the write transaction, so it holds the lock briefly."""

    events: Sequence[dict[str, Any]]
    hosts: list[str]
    times: list[int]  # each event's own time, for the clocks
    spans: list[tuple]  # per event: its span row without host and boot, or None


def prepare_events(events: Sequence[dict[str, Any]]) -> EventBatch:
    hosts = [event.get("hostname") or LOCAL_HOST for event in events]
    rows = [_span(e) if e["type"] in ("kernel", "scope_begin", "scope_end") else None for e in events]
    return EventBatch(events, hosts, [own_time(event) for event in events], rows)


def _insert(conn: Connection, table: str, columns: Sequence[str], rows: list, key_columns: Sequence[str]) -> list:
    """The rows added (a row that conflicts with a stored one is skipped)."""
    if not rows:
        return []
    added = backend_of(conn).insert_rows(conn, table, columns, rows, key_columns)
    if added is None:
        return rows
    wanted = {tuple(found) for found in added}
    at = [columns.index(name) for name in key_columns]
    return [row for row in rows if tuple(row[i] for i in at) in wanted]


def _close_scopes(conn: Connection, rows: list) -> list:
    """scope_end events: close the open span, or add a closed one; returns the rows that did."""
    columns = ", ".join(SPAN_COLUMNS)
    sql = (
        f"INSERT INTO spans ({columns}) VALUES ({', '.join('?' * len(SPAN_COLUMNS))}) "
        "ON CONFLICT (host, pid, start_ns, key) DO UPDATE SET end_ns = excluded.end_ns, "
        "duration_ns = excluded.duration_ns, state = 'closed', memory_end = excluded.memory_end "
        "WHERE spans.end_ns IS NULL"
    )
    backend = backend_of(conn)
    # One at a time: not every driver's executemany counts what an upsert changed.
    return [row for row in rows if backend.execute_count(conn, sql, row)]


def store_events(conn: Connection, batch: EventBatch, received_ns: int) -> Stored:
    """Store prepared events (in their order); duplicates are counted, not stored again."""
    if not batch.events:
        return Stored()
    assigned = clocks.assign(conn, list(zip(batch.hosts, batch.times, strict=True)), received_ns)
    by_type: dict[str, list] = {}
    for event, clock, row in zip(batch.events, assigned, batch.spans, strict=True):
        by_type.setdefault(event["type"], []).append((event, clock, row))
    kernels = _insert(conn, "spans", SPAN_COLUMNS, _rows(by_type, "kernel"), SPAN_KEY)
    opened = _insert(conn, "spans", SPAN_COLUMNS, _rows(by_type, "scope_begin"), SPAN_KEY)
    closed = _close_scopes(conn, _rows(by_type, "scope_end"))
    names.add(conn, kernels + closed, SPAN_COLUMNS)
    samples = [_sample(e, c) for e, c, _ in by_type.get("scope_sample", [])]
    stored = len(kernels) + len(opened) + len(closed)
    stored += len(_insert(conn, "scope_samples", SAMPLE_COLUMNS, samples, SAMPLE_KEY))
    stored += _lifecycle(conn, by_type.get("init", []), by_type.get("shutdown", []))
    stored += _system_samples(conn, by_type.get("system_sample", []))
    _processes(conn, [(e, c) for e, c in zip(batch.events, assigned, strict=True) if "pid" in e])
    return Stored(stored, len(batch.events) - stored)


SPAN_KEY = ("host", "pid", "start_ns", "key")
SAMPLE_KEY = ("host", "pid", "ts_ns", "key")


def _rows(by_type: dict[str, list], event_type: str) -> list[list]:
    return [[clock.host, clock.boot, *row] for _, clock, row in by_type.get(event_type, [])]


SAMPLE_COLUMNS = ("host", "boot", "pid", "name", "tag", "key", "ts_ns", "memory")


def _sample(event: dict[str, Any], clock: clocks.Clock) -> list:
    tag = event.get("tag") or ""
    return (
        clock.host,
        clock.boot,
        event["pid"],
        event["name"],
        tag,
        key("sample", event["name"], tag),
        event["ts_ns"],
        _memory(event),
    )


def _lifecycle(conn: Connection, inits: list, shutdowns: list) -> int:
    """init and shutdown: noted on the process once; a shutdown abandons its open scopes."""
    backend, changed = backend_of(conn), 0
    for event, clock, _ in inits:
        row = (clock.host, clock.boot, event["pid"], event["app"], event["ts_ns"], event["ts_ns"], event["ts_ns"])
        changed += backend.execute_count(conn, _PROCESS_UPSERT.format(column="init_ns"), (*row, event.get("logPath")))
    for event, clock, _ in shutdowns:
        row = (clock.host, clock.boot, event["pid"], event["app"], event["ts_ns"], event["ts_ns"], event["ts_ns"])
        added = backend.execute_count(conn, _PROCESS_UPSERT.format(column="shutdown_ns"), (*row, None))
        changed += added
        if added:
            abandon = (  # ended at the shutdown at the latest; how long it ran is not known
                "UPDATE spans SET state = 'abandoned', end_ns = ? "
                "WHERE host = ? AND boot = ? AND pid = ? AND end_ns IS NULL AND start_ns <= ?"
            )
            ns = event["ts_ns"]
            backend.execute_count(conn, abandon, (ns, clock.host, clock.boot, event["pid"], ns))
    return changed


_PROCESS_UPSERT = (
    "INSERT INTO processes (host, boot, pid, app, first_ns, last_ns, {column}, log_path) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (host, boot, pid) DO UPDATE SET {column} = excluded.{column}, "
    "log_path = coalesce(excluded.log_path, processes.log_path) WHERE processes.{column} IS NULL"
)


def _processes(conn: Connection, pairs: list) -> None:
    """Every process's app and time range, one row per host, boot and pid."""
    spans: dict[tuple, list] = {}
    for event, clock in pairs:
        start, end = event.get("ts_start_ns", event.get("ts_ns")), own_time(event)
        known = spans.get((clock.host, clock.boot, event["pid"]))
        if known is None:
            spans[(clock.host, clock.boot, event["pid"])] = [event["app"], start, end]
        else:
            known[1], known[2] = min(known[1], start), max(known[2], end)
    backend = backend_of(conn)
    sql = (
        "INSERT INTO processes (host, boot, pid, app, first_ns, last_ns) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (host, boot, pid) DO UPDATE SET "
        f"first_ns = {backend.smaller}(processes.first_ns, excluded.first_ns), "
        f"last_ns = {backend.larger}(processes.last_ns, excluded.last_ns), app = excluded.app"
    )
    backend.executemany(conn, sql, [(*k, *v) for k, v in spans.items()])


def _system_samples(conn: Connection, samples: list) -> int:
    """GPU samples not seen before become GPU records, as if the crawler had sent them."""
    backend = backend_of(conn)
    sql = f"INSERT INTO system_samples ({', '.join(_SEEN)}) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    new = [(e, c) for e, c, _ in samples if backend.execute_count(conn, sql, _seen(e, c))]
    records = [record for event, clock in new for record in _gpu_records(event, clock)]
    if records:
        store_records(conn, prepare(records))
    return len(new)


_SEEN = ("host", "app_key", "ts_ns", "boot")


def _seen(event: dict[str, Any], clock: clocks.Clock) -> tuple:
    return (clock.host, key(event["app"]), event["ts_ns"], clock.boot)


def _gpu_records(event: dict[str, Any], clock: clocks.Clock) -> list[dict[str, Any]]:
    """A system_sample's devices as the crawler's gpu records, split into canonical records."""
    ts = clock.wall_ns(event["ts_ns"]) // 1000
    out = []
    for device in event["devices"]:
        loaded = {
            "timestamp": ts,
            "hostname": clock.host,
            "gpuId": device.get("uuid") or "",
            "gpuIndex": device["id"],
            "metricType": "gpu",
            **({"gpuName": device["name"]} if device.get("name") else {}),
        }
        for ours, theirs in _DEVICE_FIELDS.items():
            if device.get(ours) is not None:
                loaded[theirs] = device[ours]
        out += crawler.split(loaded)
    return out


# The library's device fields under the crawler's gpu-record names.
_DEVICE_FIELDS = {
    "total_mib": "totalMemoryMiB", "used_mib": "usedTotalMemoryMiB", "free_mib": "freeMemoryMiB",
    "util_gpu": "gpuUtilPercent", "util_mem": "memUtilPercent", "temp_c": "temperatureCelsius",
    "power_mw": "powerMilliwatts", "clk_gfx": "graphicsClockMHz", "clk_sm": "smClockMHz", "clk_mem": "memClockMHz",
}  # fmt: skip
