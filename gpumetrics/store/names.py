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

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

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


def _merge(stored: Sequence[Any], new: list) -> list:
    """Two summaries of one name as one (Chan et al.)."""
    count = stored[3] + new[2]
    delta = new[6] - stored[7]
    mean = stored[7] + delta * new[2] / count
    m2 = stored[8] + new[7] + delta * delta * stored[3] * new[2] / count
    return [new[0], new[1], count, stored[4] + new[3], min(stored[5], new[4]), max(stored[6], new[5]), mean, m2,
            stored[9] + new[8]]  # fmt: skip


def add(session: Session, rows: Iterable[Sequence[Any]], layout: Sequence[str]) -> None:
    """Add the timed spans among `rows` (full span rows of `layout`) to their names' rows."""
    at = {name: layout.index(name) for name in ("type", "name", "name_key", "duration_ns", "cuda_error")}
    batch: dict[int, list] = {}
    for row in rows:
        duration = row[at["duration_ns"]]
        if duration is not None:
            kind = row[at["type"]]
            failed = kind == "kernel" and row[at["cuda_error"]] != OK
            _fold(batch, row[at["name_key"]], kind, row[at["name"]], duration, failed)
    if not batch:
        return
    keys = list(batch)
    sql = f"SELECT {', '.join(COLUMNS)} FROM span_names WHERE name_key IN ({', '.join('?' * len(keys))})"
    stored = {row[0]: row for row in backend_of(session).fetch(session.connection(), sql, keys)}
    merged = [(key, *(_merge(stored[key], new) if key in stored else new)) for key, new in batch.items()]
    _write(session, merged)


def _write(session: Session, rows: list) -> None:
    sql = (
        f"INSERT INTO span_names ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
        "ON CONFLICT (name_key) DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in COLUMNS[1:])
    )
    backend_of(session).executemany(session.connection(), sql, rows)


def rebuild(session: Session) -> None:
    """Every name's row again from the spans that remain (after retention deleted some)."""
    session.execute(delete(span_names))
    c = spans.c
    timed = select(c.name_key, c.type, c.name, c.duration_ns, c.cuda_error).where(c.duration_ns.is_not(None))
    out: dict[int, list] = {}
    for name_key, kind, name, duration, error in session.execute(timed.execution_options(yield_per=10_000)):
        _fold(out, name_key, kind, name, duration, kind == "kernel" and error != OK)
    if out:
        _write(session, [(key, *values) for key, values in out.items()])


def read(session: Session, kind: str, name: str | None) -> list[Any]:
    query = select(span_names).where(span_names.c.type == kind)
    if name is not None:
        query = query.where(span_names.c.name == name)
    return list(session.execute(query))
