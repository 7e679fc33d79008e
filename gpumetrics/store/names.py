"""Per kernel (or scope) name, what its timed spans add up to, kept current by every write.

The summary of all kernels (GET /spans/summary without host, app, pid, tag or time
filters) then reads a row a name; only its median walks the (name, duration) index. A
batch's spans are summed in Python and merged with the stored row (counts and totals
add; extremes stay; mean and m2 merge by Chan's rule), so a name's row is exact for any
arrival order. Retention rebuilds the rows from the spans that remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, select

from ..db import backend_of
from ..db.tables import span_names, spans

COLUMNS = ("name_key", "type", "name", "count", "total", "min", "max", "mean", "m2", "failed")
OK = "cudaSuccess"


def _fold(out: dict[int, list], name_key: int, kind: str, name: str, duration: int, failed: bool) -> None:
    """Welford's step: one duration into its name's [type, name, count, total, min, max, mean, m2, failed]."""
    known = out.get(name_key)
    if known is None:
        out[name_key] = [kind, name, 1, duration, duration, duration, float(duration), 0.0, int(failed)]
        return
    known[2] += 1
    known[3] += duration
    known[4], known[5] = min(known[4], duration), max(known[5], duration)
    delta = duration - known[6]
    known[6] += delta / known[2]
    known[7] += delta * (duration - known[6])
    known[8] += int(failed)


def add(conn: Connection, rows: Iterable[Sequence[Any]], layout: Sequence[str]) -> None:
    """Add the timed spans among `rows` (full span rows of `layout`) to their names' rows."""
    at = {name: layout.index(name) for name in ("type", "name", "name_key", "duration_ns", "cuda_error")}
    batch: dict[int, list] = {}
    for row in rows:
        duration = row[at["duration_ns"]]
        if duration is not None:
            kind = row[at["type"]]
            failed = kind == "kernel" and row[at["cuda_error"]] != OK
            _fold(batch, row[at["name_key"]], kind, row[at["name"]], duration, failed)
    if batch:
        _write(conn, [(key, *batch[key]) for key in sorted(batch)], merge=True)


def _write(conn: Connection, rows: list, merge: bool = False) -> None:
    """Insert names' rows; with `merge`, fold each into the stored row in the upsert itself,
    so that concurrent writers (PostgreSQL: other hosts) add up instead of overwriting each
    other. Rows go in name_key order, so two writers never wait on each other's rows in turn."""
    backend = backend_of(conn)
    old, new = "span_names", "excluded"
    delta = f"({new}.mean - {old}.mean)"
    both = f"({old}.count + {new}.count)"
    merged = {
        "count": f"{old}.count + {new}.count",
        "total": f"{old}.total + {new}.total",
        "min": f"{backend.smaller}({old}.min, {new}.min)",
        "max": f"{backend.larger}({old}.max, {new}.max)",
        "mean": f"{old}.mean + {delta} * {new}.count / {both}",  # Chan et al.
        "m2": f"{old}.m2 + {new}.m2 + {delta} * {delta} * {old}.count * {new}.count / {both}",
        "failed": f"{old}.failed + {new}.failed",
    }
    updates = ", ".join(f"{column} = {merged.get(column, f'{new}.{column}') if merge else f'{new}.{column}'}"
                        for column in COLUMNS[1:])  # fmt: skip
    sql = (
        f"INSERT INTO span_names ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
        f"ON CONFLICT (name_key) DO UPDATE SET {updates}"
    )
    backend.executemany(conn, sql, rows)


def rebuild(conn: Connection) -> None:
    """Every name's row again from the spans that remain (after retention deleted some)."""
    conn.execute(delete(span_names))
    c = spans.c
    timed = select(c.name_key, c.type, c.name, c.duration_ns, c.cuda_error).where(c.duration_ns.is_not(None))
    out: dict[int, list] = {}
    for name_key, kind, name, duration, error in conn.execute(timed.execution_options(yield_per=10_000)):
        _fold(out, name_key, kind, name, duration, kind == "kernel" and error != OK)
    if out:
        _write(conn, [(key, *values) for key, values in out.items()])


def read(conn: Connection, kind: str, name: str | None) -> list[Any]:
    query = select(span_names).where(span_names.c.type == kind)
    if name is not None:
        query = query.where(span_names.c.name == name)
    return list(conn.execute(query))
