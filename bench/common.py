"""What the benchmarks share: the service as the tests start it, the data, a POST client, timing, tables.

Why this module exists: each benchmark compares the deployed service with a baseline
measured in the same run (the machine is shared and noisy, so only same-run ratios
mean anything), and everything that describes the service comes from the service
itself: the gunicorn command from tests/conftest.py's Server, the schema from the
migrations (Database.upgrade), the pragmas from the engine's own connections, the rows
from store.write.prepare and the GPU ids from store.fleet.resolve_gpus. Nothing here
copies the service, so a change to it shows up in the figures instead of going unseen.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import Server  # noqa: E402
from samples import FIELDS  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from gpumetrics import times  # noqa: E402
from gpumetrics.db import Database  # noqa: E402
from gpumetrics.records.validate import validate  # noqa: E402
from gpumetrics.store.fleet import resolve_gpus  # noqa: E402
from gpumetrics.store.write import ROW_COLUMNS, prepare, store_records  # noqa: E402

GPUS = 8
KIND_NAMES = tuple(FIELDS)  # the six kinds, with values the tests keep valid
SECOND = 1_000_000
PAST = times.parse_iso("2025-01-01T00:00:00Z")  # where generated history starts: long expired


# ---- arguments, facts and tables --------------------------------------------------------------------


def arguments(doc: str, baseline_sec: float | None = None) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring, with --database-url, which every benchmark takes,
    and, given its default, --baseline-sec: how long PostLoad runs on a quiet service for its baseline."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (postgresql+psycopg://USER@HOST:PORT/DB): scratch databases are made there "
        "and dropped after; without it, SQLite files",
    )
    if baseline_sec is not None:
        parser.add_argument("--baseline-sec", type=float, default=baseline_sec, help=f"({baseline_sec:g})")
    return parser


def is_postgres(url: str | None) -> bool:
    return bool(url) and not url.startswith("sqlite")


def commit_of(root: Path = ROOT) -> str:
    """The short commit of a checkout, marked when its service code has uncommitted changes."""
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "gpumetrics", "config.py", "wsgi.py"], capture_output=True, text=True
    ).stdout.strip()
    return f"{commit or 'unknown'}{'+changes' if dirty else ''}"


def header(title: str) -> None:
    """One line that dates a run: when, which commit, and how busy the machine was."""
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {title} | {stamp} | commit {commit_of()} | nproc {os.cpu_count()} | load {load}", flush=True)


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """A Markdown table, so that a run can be pasted into docs/performance.md as it is."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(text) for text in column) for column in zip(columns, *cells, strict=True)]
    print("| " + " | ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * width for width in widths) + " |")
    for row in cells:  # the first column names the row: to the left; figures to the right
        aligned = [row[0].ljust(widths[0])] + [
            text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(aligned) + " |")
    sys.stdout.flush()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0.99: p99); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rate(count: float) -> str:
    return f"{count:,.0f}"


# ---- the data ---------------------------------------------------------------------------


def items(
    count: int, start_us: int, host: str | None = None, offset: int = 0, gpus: int = GPUS
) -> list[dict[str, Any]]:
    """`count` valid records in the API's format: every kind of each GPU each second, all distinct.

    `offset` continues a series: items(n, t, offset=k) are records k..k+n-1 of the one from t.
    """
    out = []
    for i in range(offset, offset + count):
        second, slot = divmod(i, gpus * len(KIND_NAMES))
        gpu, kind = divmod(slot, len(KIND_NAMES))
        metric = KIND_NAMES[kind]
        values = {name: value + i % 7 for name, value in FIELDS[metric].items()}  # varied, still valid
        item = {"timestamp": times.to_iso(start_us + second * SECOND), "gpuIndex": gpu, "metric": metric, **values}
        if host:
            item["host"] = host
        out.append(item)
    return out


def canonical(api_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the service makes of the items (its own validation); every one must pass."""
    checked = validate(api_items)
    if checked.rejected:
        raise SystemExit(f"the generator made invalid records: {checked.rejected[:3]}")
    return checked.records


def body(api_items: list[dict[str, Any]]) -> bytes:
    return json.dumps(api_items, separators=(",", ":")).encode()


def recent_start(count: int) -> int:
    """A start time for `count` records that end a minute ago: inside any retention window."""
    span = count // (GPUS * len(KIND_NAMES)) + 1
    return (times.now_micros() // SECOND - span - 60) * SECOND


# ---- databases ----------------------------------------------------------------------------


@contextmanager
def fresh_database(server_url: str | None, folder: Path, label: str) -> Iterator[str]:
    """A new, empty database: a SQLite file in `folder`, or (given a PostgreSQL URL) a database
    of its own on that server, dropped afterwards. A database, not a schema, because the
    service's job locks are advisory locks, which are per database."""
    if not is_postgres(server_url):
        path = folder / f"{label}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm", ".write.lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    name = f"gpumetrics_bench_{label}_{os.urandom(3).hex()}".replace("-", "_")
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class DriverInserts:
    """Rows of the service's `table` inserted by the driver alone: sqlite3 executemany, psycopg COPY.

    The schema is the service's (its migrations) and the connection is one of the service's
    own engine (so it has the service's pragmas): only the INSERT is the driver's.
    """

    def __init__(self, db: Database, table: str, columns: Sequence[str]) -> None:
        self.db = db
        self.sqlite = db.backend.name == "sqlite"
        self.raw = db.engine.raw_connection()
        self.conn = self.raw.driver_connection
        names, marks = ", ".join(columns), ", ".join([db.backend.placeholders("?")] * len(columns))
        self.sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        self.copy = f"COPY {table} ({names}) FROM STDIN"  # no duplicates here: the rows are all new

    def insert(self, rows: list[list[Any]]) -> None:
        """One write transaction, as the service makes per POST."""
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.sql, rows)
            self.conn.execute("COMMIT")
        else:
            with self.conn.cursor() as cursor, cursor.copy(self.copy) as copy:
                for row in rows:
                    copy.write_row(row)
            self.conn.commit()

    def close(self) -> None:
        self.raw.close()


class RawWriter(DriverInserts):
    """The baseline of records: store.write.prepare's rows, their GPU ids resolved by
    store.fleet.resolve_gpus, into a database of their own."""

    def __init__(self, url: str) -> None:
        db = Database(url)
        db.upgrade()
        super().__init__(db, "records", ROW_COLUMNS)

    def rows(self, records: list[dict[str, Any]]) -> list[list[Any]]:
        """prepare()'s rows with their GPU ids, the GPUs made or updated by the service's own code."""
        batch = prepare(records)
        with self.db.writing() as conn:
            ids = resolve_gpus(conn, batch.sightings)
        return [[ids[key], *row] for key, row in zip(batch.keys, batch.rows, strict=True)]

    def close(self) -> None:
        super().close()
        self.db.dispose()


def load_records(url: str, rows: Iterable[dict[str, Any]], total: int, chunk: int = 20_000) -> float:
    """Store rows (the API's record dicts) through the service's write path, `chunk` per transaction; records/s.

    validate, prepare and store_records, as a POST does: whatever the service keeps beside
    the records (GPUs, rollups, latest copies, ...) is then right too, however that changes.
    """
    db = Database(url)
    db.upgrade()
    began, done, source = time.perf_counter(), 0, iter(rows)
    try:
        while part := list(itertools.islice(source, chunk)):
            batch = prepare(canonical(part))
            with db.writing() as conn:
                store_records(conn, batch)
            done += len(part)
            if done % 1_000_000 < chunk or done == total:
                print(f"  {done:,} / {total:,} records, {done / (time.perf_counter() - began):,.0f}/s", flush=True)
    finally:
        db.dispose()
    return done / (time.perf_counter() - began)


def load(url: str, count: int, start_us: int, gpus: int = GPUS, chunk: int = 20_000) -> None:
    """Add `count` generated records from `start_us` on, through the service's own write path."""
    generated = (
        record
        for offset in range(0, count, chunk)
        for record in items(min(chunk, count - offset), start_us, offset=offset, gpus=gpus)
    )
    load_records(url, generated, count, chunk)


DATA = ROOT / "bench" / "data"  # git-ignored


def cached_sqlite(name: str, records: int, start_us: int) -> str:
    """The URL of bench/data/<name>.db holding `records` generated records from `start_us` on.

    Built once, and again when the service's migrations have moved on since.
    """
    path = DATA / f"{name}.db"
    with tempfile.TemporaryDirectory() as tmp:
        head = Database(f"sqlite:///{tmp}/head.db")
        head.upgrade()
        wanted = head.revision()
        head.dispose()
    if path.exists():
        existing = Database(f"sqlite:///{path}")
        current = existing.revision()
        existing.dispose()
        if current == wanted:
            print(f"reusing {path.relative_to(ROOT)}", flush=True)
            return f"sqlite:///{path}"
    building = path.with_name(path.name + ".building")
    building.unlink(missing_ok=True)
    DATA.mkdir(exist_ok=True)
    print(f"building {path.relative_to(ROOT)}: {records:,} records", flush=True)
    load(f"sqlite:///{building}", records, start_us)
    os.replace(building, path)
    Path(f"{building}.write.lock").unlink(missing_ok=True)  # the service's writers queue on it
    return f"sqlite:///{path}"


# ---- the service -----------------------------------------------------------------------------

SERVICE_ENV = {"WORKERS": "2", "LOG_LEVEL": "WARNING", "METRICS_RETENTION_HOURS": "0"}


@contextmanager
def service(env: dict[str, str], folder: Path, root: Path = ROOT) -> Iterator[Server]:
    """The real gunicorn (tests/conftest.py's Server) from the checkout at `root`, until the block ends."""
    full = {**SERVICE_ENV, **env}
    server = Server(full, folder, root=root)
    try:
        server.wait_ready()
        server.wait_workers(int(full["WORKERS"]))  # a client that connects sooner stays with the first
        yield server
    finally:
        server.stop()


def worker_cpu(server: Server) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each gunicorn worker, from /proc."""
    used = {}
    for pid in server.worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_since(server: Server, before: dict[int, float]) -> list[float]:
    """CPU seconds each worker used since `before`, busiest first."""
    now = worker_cpu(server)
    return sorted((now[pid] - before.get(pid, 0) for pid in now), reverse=True)


def connect(server: Server, timeout: float = 120) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def get_json(server: Server, path: str, conn: http.client.HTTPConnection | None = None) -> Any:
    own = conn or connect(server)
    try:
        own.request("GET", path)
        response = own.getresponse()
        answer = response.read()
    finally:
        if conn is None:
            own.close()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {answer[:300]!r}")
    return json.loads(answer)


def post(conn: http.client.HTTPConnection, data: bytes, keep_alive: bool = True) -> dict[str, Any]:
    """POST a body to /metrics; the answer, which must say that every record was stored."""
    headers = {"Content-Type": "application/json", **({} if keep_alive else {"Connection": "close"})}
    conn.request("POST", "/metrics", body=data, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    if response.status != 201:
        raise RuntimeError(f"POST /metrics: {response.status} {answer[:300]!r}")
    return json.loads(answer)


class PostLoad(threading.Thread):
    """A client that POSTs `batch` fresh records every `interval` s on a new connection, and times each.

    Samples are (wall-clock time sent, latency s); a tick missed while waiting is
    skipped, not made up with a burst. The records name their own host.
    """

    def __init__(self, server: Server, batch: int = 100, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.server, self.batch, self.interval = server, batch, interval
        self.start_us = times.now_micros() - 2 * 3600 * SECOND
        self.samples: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        tick = time.monotonic()
        while not self._halt.is_set():
            data = body(items(self.batch, self.start_us, host="bench-client", offset=self.sent))
            wall, began = time.time(), time.perf_counter()
            conn = connect(self.server)
            try:
                post(conn, data, keep_alive=False)
                self.samples.append((wall, time.perf_counter() - began))
            except (OSError, RuntimeError) as error:
                self.failures.append(repr(error))
            finally:
                conn.close()
            self.sent += self.batch
            tick = max(tick + self.interval, time.monotonic())
            self._halt.wait(tick - time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def latencies(self, begin: float = -math.inf, end: float = math.inf) -> list[float]:
        """Latencies of the POSTs sent between two wall-clock times."""
        return [took for wall, took in self.samples if begin <= wall <= end]


def latency_cells(values: list[float]) -> list[str]:
    """p50, p99 and max of latencies, as table cells."""
    return [ms(percentile(values, 0.5)), ms(percentile(values, 0.99)), ms(max(values, default=math.nan))]


def profile_in_process(database_url: str, calls: Any, top: int = 25) -> None:
    """cProfile of `calls(client)` served in this process by the Flask test client; pstats as it is.

    One process, one thread, no gunicorn: it shows where the service's own Python time
    goes, not the waiting between workers.
    """
    import cProfile
    import gc
    import pstats

    import config
    from gpumetrics import create_app
    from gpumetrics.state import app_state

    app = create_app(
        config.load({"DATABASE_URL": database_url, "METRICS_RETENTION_HOURS": "0", "LOG_LEVEL": "WARNING"})
    )
    client = app.test_client()
    calls(client)  # warm-up: imports, the engine's first connections
    gc.collect()
    gc.freeze()  # the benchmark's own heap would slow every full collection; a worker has none
    profiler = cProfile.Profile()
    profiler.runcall(calls, client)
    gc.unfreeze()
    app_state(app).db.dispose()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    sys.stdout.flush()
