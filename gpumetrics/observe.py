"""The service's own metrics (gpumetrics_*), with prometheus-client, right under several gunicorn workers.

Events are counted where they happen: records stored, duplicates and rejected where a
POST, the file tailer or `import` stores them; request durations around every request;
lines of tailed files; records retention deleted. Under gunicorn each worker is its own
process, so the counts go to prometheus-client's multiprocess files: gunicorn_conf.py
sets PROMETHEUS_MULTIPROC_DIR (the operator's folder, or a private one per start),
empties it, and marks dead workers, before any worker imports prometheus-client; a
scrape in any worker then sums every worker's files, those of workers gone included,
so no count is lost when a worker dies or a job moves to another. Outside gunicorn (the
Flask test client, `python wsgi.py`) they are the process's own.

What the database already holds is read from it at scrape time instead (its size, how
far each tailed file is behind, retention's last run): every worker, and every replica
on one PostgreSQL, then answers the same, whichever process ran the job.

The metric objects are made on first use, not at import: in multiprocess mode making one
makes its file, and `python -m gpumetrics --help` must make none.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Connection, text

from . import __version__, times
from .db import backend_of
from .store import jobs

if TYPE_CHECKING:
    from config import Settings

    from .records.jsonl import Lines
    from .store.write import Stored

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SOURCES = ("http", "file", "import")
REASONS = ("invalid", "malformed", "future", "expired")
OWN = CollectorRegistry()  # the process's own metrics, when not in multiprocess mode


@dataclass(frozen=True)
class _Metrics:
    stored: Counter
    duplicates: Counter
    rejected: Counter
    duration: Histogram
    lines_read: Counter
    lines_rejected: Counter
    deleted: Counter


def multiprocess_dir() -> str | None:
    """The folder every process of this service counts into, or None: counts are the process's own."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


@functools.cache
def _metrics() -> _Metrics:
    if os.environ.get(MULTIPROC_ENV) and multiprocess_dir() is None:
        # prometheus-client would fail at the first count (a command run where the service is not).
        log.warning(
            "%s=%s is not a folder: this process's counts stay its own", MULTIPROC_ENV, os.environ[MULTIPROC_ENV]
        )
        values.ValueClass = values.MutexValue
    disable_created_metrics()  # multiprocess mode has no _created series: the same answer either way
    made = {"registry": OWN}
    return _Metrics(
        stored=Counter(
            "gpumetrics_records_stored_total", "Records stored, by where they came from.", ["source"], **made
        ),
        duplicates=Counter(
            "gpumetrics_records_duplicates_total",
            "Valid records not stored because they were stored before (same host, GPU, metric, time, pid).",
            ["source"],
            **made,
        ),
        rejected=Counter(
            "gpumetrics_records_rejected_total",
            "Records (HTTP) or lines (files, import) rejected, by source and reason: invalid, malformed (not "
            "JSON records), future (ahead of MAX_CLOCK_SKEW_SEC), expired (older than kept).",
            ["source", "reason"],
            **made,
        ),
        duration=Histogram(
            "gpumetrics_http_request_duration_seconds",
            "Time to answer a request, by route, method and status.",
            ["endpoint", "method", "status"],
            **made,
        ),
        lines_read=Counter("gpumetrics_tail_lines_read_total", "Lines read from a tailed file.", ["path"], **made),
        lines_rejected=Counter(
            "gpumetrics_tail_lines_rejected_total", "Lines of a tailed file rejected.", ["path"], **made
        ),
        deleted=Counter("gpumetrics_retention_records_deleted_total", "Records deleted by retention.", **made),
    )


def register(app: Flask, tailed: Iterable[str] = ()) -> None:
    """Time every request; make the counters, so that each reads 0 before its first event."""
    metrics = _metrics()
    for source in SOURCES:
        metrics.stored.labels(source)
        metrics.duplicates.labels(source)
        for reason in REASONS:
            metrics.rejected.labels(source, reason)
    for path in tailed:
        metrics.lines_read.labels(_key(path))
        metrics.lines_rejected.labels(_key(path))
    app.before_request_funcs.setdefault(None, []).insert(0, _start_clock)
    app.after_request(_observe)


def _key(path: str) -> str:
    return str(Path(path).absolute())  # as the tailer and /health name a file


def _start_clock() -> None:
    g.observe_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("observe_started", time.perf_counter())
    rule = request.url_rule.rule if request.url_rule is not None else "other"
    child = _metrics().duration.labels(rule, request.method, str(response.status_code))
    if response.is_streamed:  # an export: its time is the time to stream it all
        response.call_on_close(lambda: child.observe(time.perf_counter() - started))
    else:
        child.observe(time.perf_counter() - started)
    return response


def reason_of(message: str) -> str:
    """The `reason` label of a rejection, from what it says."""
    if message.startswith(("not JSON records", "line of ")):
        return "malformed"
    if "MAX_CLOCK_SKEW_SEC" in message:
        return "future"
    if "is kept" in message or "records have expired" in message:
        return "expired"
    return "invalid"


def ingested(source: str, stored: Stored, rejected: Iterable[dict[str, Any]]) -> None:
    """Count a POST's outcome: what it stored, its duplicates, and each rejected record (`{"errors"}`)."""
    metrics = _metrics()
    metrics.stored.labels(source).inc(stored.stored)
    metrics.duplicates.labels(source).inc(stored.duplicates)
    for item in rejected:
        metrics.rejected.labels(source, reason_of(str(item["errors"]))).inc()


def lines_ingested(source: str, lines: Lines, stored: Stored | None, path: str | None = None) -> None:
    """Count a run of JSONL lines (a tailed file's with its `path`, or import's) and what storing them did."""
    metrics = _metrics()
    if stored is not None:
        metrics.stored.labels(source).inc(stored.stored)
        metrics.duplicates.labels(source).inc(stored.duplicates)
        for reason in stored.refused.values():
            metrics.rejected.labels(source, reason_of(reason)).inc()
    for _, reason in lines.rejected:
        metrics.rejected.labels(source, reason_of(reason)).inc()
    if path is not None:
        metrics.lines_read.labels(_key(path)).inc(lines.read)
        metrics.lines_rejected.labels(_key(path)).inc(len(lines.rejected))


def retention_deleted(count: int) -> None:
    _metrics().deleted.inc(count)


# ---- at scrape time -----------------------------------------------------------------------------


class StateCollector:
    """What the database holds about the service, read once per scrape; and the build."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def read_state(conn: Connection, settings: Settings) -> StateCollector:
    """The database's size, each tailed file's bytes behind, retention's last run, the build."""
    build = GaugeMetricFamily("gpumetrics_build_info", "The running gpumetrics: its version.", labels=["version"])
    build.add_metric([__version__], 1)
    size = GaugeMetricFamily(
        "gpumetrics_database_size_bytes",
        "Size of the database in bytes: the SQLite file (without its WAL), or the PostgreSQL database.",
        value=_database_size(conn),
    )
    behind = GaugeMetricFamily(
        "gpumetrics_tail_bytes_behind", "Bytes of a tailed file not read yet, at its last poll.", labels=["path"]
    )
    host = socket.gethostname()
    for path in settings.tailed_files:
        report = jobs.file_report(conn, host, _key(path))
        behind.add_metric([_key(path)], report["bytesBehind"] or 0)
    families: list[Metric] = [build, size, behind]
    last = jobs.last_run(conn, "retention")
    if last is not None:
        started, finished = times.parse_iso(last["startedAt"]), times.parse_iso(last["finishedAt"])
        families.append(
            GaugeMetricFamily(
                "gpumetrics_retention_last_run_duration_seconds",
                "How long retention's last run took.",
                value=(finished - started) / 1e6,
            )
        )
        families.append(
            GaugeMetricFamily(
                "gpumetrics_retention_last_run_timestamp_seconds",
                "When retention's last run finished, in seconds since the epoch.",
                value=finished / 1e6,
            )
        )
    return StateCollector(families)


def _database_size(conn: Connection) -> float:
    return float(conn.execute(text(backend_of(conn).size_sql)).scalar_one())


def exposition(*collectors: Any) -> bytes:
    """One scrape: the collectors' metrics, then the service's own, summed over every process."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    folder = multiprocess_dir()
    if folder is not None:
        MultiProcessCollector(registry, path=folder)
    else:
        registry.register(OWN)
    return generate_latest(registry)
