"""Shared by the benchmarks: the real gunicorn service, HTTP timing, machine facts.

The benchmarks import the service from the checkout (they are run as
`python bench/<name>.py` from the repository root, like `make bench` does).
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpumetrics.store import _ROW_COLUMNS as RECORD_COLUMNS  # noqa: E402  (the insert's column order)

# The command of `make serve`, the Dockerfile and tests/conftest.py's Server.
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real gunicorn master on a random free port; a context manager that stops it."""

    def __init__(self, env: dict[str, str], log_dir: Path | None = None, app: str = "wsgi:app") -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        log_dir = Path(log_dir or tempfile.gettempdir())
        self.log = log_dir / f"gunicorn-bench-{self.port}.log"
        full_env = {**os.environ, "LOG_LEVEL": "WARNING", **env, "PORT": str(self.port)}
        with open(self.log, "wb") as log:
            command = [*GUNICORN[:-1], app]  # app: bench/experiment.py tries changes to the service
            self.process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                status, _ = get(self.connection(timeout=2), "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"gunicorn not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def get_json(conn: http.client.HTTPConnection, path: str, expect: int = 200):
    status, body = get(conn, path)
    if status != expect:
        raise SystemExit(f"GET {path}: {status} {body[:500]!r}")
    return json.loads(body)


def timed_get(conn: http.client.HTTPConnection, path: str, repeat: int, warmup: int = 2) -> list[float]:
    """Seconds taken by each of `repeat` GETs of `path` (after `warmup` untimed ones)."""
    for _ in range(warmup):
        get_json(conn, path)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        status, body = get(conn, path)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body[:500]!r}")
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    """The commit of the checkout, and whether the service's code differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gpumetrics", "config.py", "wsgi.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes to the service' if dirty else ''}"


def print_machine() -> None:
    facts = machine()
    print(
        f"# {facts['date']} | nproc {facts['nproc']} | {facts['cpu']} | Python {facts['python']} "
        f"| SQLite {facts['sqlite']} | load avg {facts['load']} | commit {facts['commit']}",
        flush=True,
    )


def sqlite_pragmas(conn) -> None:
    """The pragmas of gpumetrics/db.py's _sqlite_pragmas, for raw sqlite3 connections."""
    from gpumetrics.db import SQLITE_BUSY_TIMEOUT_MS

    conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")


def create_schema(url: str) -> None:
    """Give the database at `url` the service's schema the way the service makes it (its migrations)."""
    from gpumetrics.db import Database

    database = Database(url)
    try:
        database.upgrade()
    finally:
        database.dispose()


def cached(path: Path, wanted: dict, build: Callable[[], None], rebuild: bool = False) -> bool:
    """Build the data file at `path`, unless the .json beside it says it was built as `wanted`.

    Returns True when the existing file was kept.
    """
    sidecar = path.with_name(path.name + ".json")
    if not rebuild and path.exists() and sidecar.exists():
        try:
            if json.loads(sidecar.read_text()) == wanted:
                return True
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)
    build()
    sidecar.write_text(json.dumps(wanted, indent=1))
    return False


@contextmanager
def bulk_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh SQLite file with the service's schema, for loading millions of rows fast.

    The records indexes are dropped for the load and rebuilt after it; the finished
    file is moved to `path` only then, so an interrupted build leaves nothing behind.
    """
    building = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_schema(f"sqlite:///{building}")
    conn = sqlite3.connect(building, isolation_level=None)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -524288", "temp_store = MEMORY"):
        conn.execute(f"PRAGMA {pragma}")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    yield conn
    for name, ddl in indexes:
        began = time.perf_counter()
        conn.execute(ddl)
        print(f"  index {name}: {time.perf_counter() - began:.1f} s", flush=True)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    os.replace(building, path)


def load_records(conn: sqlite3.Connection, rows: Iterator[tuple], total: int, chunk: int = 250_000) -> None:
    """Insert `total` rows of RECORD_COLUMNS, a transaction per chunk, printing progress."""
    sql = f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
    start = time.perf_counter()
    done = 0
    while done < total:
        part = [row for _, row in zip(range(chunk), rows, strict=False)]
        if not part:
            break
        conn.execute("BEGIN")
        conn.executemany(sql, part)
        conn.execute("COMMIT")
        done += len(part)
        if done % 1_000_000 < chunk or done >= total:
            print(f"  {done:>12,} / {total:,} records ({done / (time.perf_counter() - start):,.0f}/s)", flush=True)


# ---- shared by tail.py and retention.py --------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction 0.99 = p99); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil
    return ordered[int(rank) - 1]


def worker_cpu(server: Server) -> dict[int, float]:
    """CPU seconds (user+system) of each gunicorn worker, from /proc; {} where there is none."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = server.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        out = {}
        for child in children:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(child)] = (int(fields[11]) + int(fields[12])) / tick
        return out
    except OSError:
        return {}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """Cores used by each worker and by the whole machine between start() and stop()."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def start(self) -> CpuMeter:
        self._workers, self._machine, self._began = worker_cpu(self.server), machine_cpu(), time.perf_counter()
        return self

    def stop(self) -> dict:
        elapsed = time.perf_counter() - self._began
        workers, machine_now = worker_cpu(self.server), machine_cpu()
        busy, total = (now - before for now, before in zip(machine_now, self._machine, strict=True))
        return {
            "workers": sorted(((workers[p] - self._workers.get(p, 0)) / elapsed for p in workers), reverse=True),
            "machine": busy / total * (os.cpu_count() or 1) if total else float("nan"),
        }


def cores_text(cpu: dict) -> str:
    split = " + ".join(f"{cores:.2f}" for cores in cpu["workers"])
    return f"workers {split} cores, whole machine {cpu['machine']:.2f} of {os.cpu_count()}"


class PostClient(threading.Thread):
    """POSTs a small batch of fresh, valid records every `interval` seconds and times each.

    Records: `host` (default "bench-client"), gpuIndex 0..7, all six kinds, one
    second apart per GPU and kind, starting `start_us`: no two are the same record.
    Every POST is kept as (perf_counter at send, epoch seconds at send, latency, status).
    A missed tick is skipped, not made up with a burst.
    """

    KINDS = ("memory", "utilization", "temperature", "power", "clocks", "process")

    def __init__(
        self,
        server: Server,
        batch: int = 100,
        interval: float = 0.05,
        reconnect: bool = True,
        start_us: int | None = None,
        host: str = "bench-client",
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.batch, self.interval, self.reconnect, self.host = server, batch, interval, reconnect, host
        now_us = int(time.time()) * 1_000_000
        self.next_us = start_us if start_us is not None else now_us - 2 * 3600 * 1_000_000
        self.sent = 0  # records sent
        self.samples: list[tuple[float, float, float, int]] = []
        self.failures: list[str] = []
        self.stored = 0
        self._halt = threading.Event()
        self.conn: http.client.HTTPConnection | None = None  # a kept-alive connection to start with

    def body(self) -> bytes:
        items = []
        for _ in range(self.batch):
            second, rest = divmod(self.sent, 48)
            gpu, k = divmod(rest, 6)
            kind = self.KINDS[k]
            ts = self.next_us + second * 1_000_000
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1_000_000)) + f".{ts % 1_000_000:06d}Z"
            record = {"timestamp": stamp, "host": self.host, "gpuIndex": gpu, "metric": kind}
            if kind == "memory":
                record.update(totalMiB=40960, usedMiB=self.sent % 40960, freeMiB=40960 - self.sent % 40960)
            elif kind == "utilization":
                record.update(gpuPercent=self.sent % 101, memoryPercent=(self.sent * 7) % 101)
            elif kind == "temperature":
                record.update(celsius=40 + self.sent % 45)
            elif kind == "power":
                record.update(watts=100 + (self.sent % 1000) / 10)
            elif kind == "clocks":
                record.update(graphicsMHz=1410, memoryMHz=1215)
            else:
                record.update(pid=1000 + gpu, usedMiB=2048 + self.sent % 512)
            items.append(record)
            self.sent += 1
        return json.dumps(items, separators=(",", ":")).encode()

    def post_once(self, conn: http.client.HTTPConnection | None) -> http.client.HTTPConnection | None:
        body = self.body()
        headers = {"Content-Type": "application/json"}
        if self.reconnect:
            headers["Connection"] = "close"
        began, wall = time.perf_counter(), time.time()
        status = 0
        try:
            if conn is None:
                conn = self.server.connection(timeout=120)
            conn.request("POST", "/metrics", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            status = response.status
            if status == 201:
                self.stored += json.loads(answer).get("stored", 0)
            else:
                self.failures.append(f"{status} {answer[:200]!r}")
        except OSError as error:
            self.failures.append(repr(error))
            conn = None
        took = time.perf_counter() - began
        self.samples.append((began, wall, took, status))
        if self.reconnect and conn is not None:
            conn.close()
            conn = None
        return conn

    def run(self) -> None:
        conn, self.conn = self.conn, None
        tick = time.perf_counter()
        while not self._halt.is_set():
            conn = self.post_once(conn)
            tick += self.interval
            now = time.perf_counter()
            if tick < now:
                tick = now  # late: skip the missed ticks
            self._halt.wait(tick - now)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def latencies(self, begin: float = float("-inf"), end: float = float("inf"), wall: bool = False) -> list[float]:
        """Latencies of the POSTs sent within [begin, end] (perf_counter, or epoch seconds with wall)."""
        column = 1 if wall else 0
        return [sample[2] for sample in self.samples if begin <= sample[column] <= end]


def latency_text(values: list[float]) -> str:
    if not values:
        return "no POSTs"
    return (
        f"{len(values)} POSTs: p50 {percentile(values, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(values, 0.99) * 1e3:.1f} ms, max {max(values) * 1e3:.1f} ms"
    )


def health_jobs(server: Server, conn: http.client.HTTPConnection | None = None) -> dict:
    """The `jobs` part of GET /health (a fresh connection unless one is given)."""
    own = conn is None
    conn = conn or server.connection(timeout=30)
    try:
        return get_json(conn, "/health")["jobs"]
    finally:
        if own:
            conn.close()


def admin_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain libpq URL for psycopg."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ScratchPostgres:
    """A database of its own on the server of `url`, dropped on exit; `.url` is its SQLAlchemy URL.

    A database rather than a schema: PostgreSQL advisory locks (the service's job locks)
    are per database, so a test suite running on the same server cannot hold our jobs.
    """

    def __init__(self, url: str, label: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = admin_dsn(url)
        self.name = f"gpumetrics_bench_{label}_{os.urandom(4).hex()}"
        self.url = make_url(url).set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> ScratchPostgres:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        return self

    def __exit__(self, *exc) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def worker_children(server: Server) -> list[int]:
    pid = server.process.pid
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def worker_of(server: Server, conn: http.client.HTTPConnection) -> int | None:
    """The pid of the gunicorn worker holding the server end of an open client connection."""
    if conn.sock is None:
        return None
    client_port = conn.sock.getsockname()[1]
    wanted = f"0100007F:{server.port:04X} 0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if f"{fields[1]} {fields[2]}" == wanted:
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in worker_children(server):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def pinned_clients(server: Server, interval: float, batch: int, tries: int = 40) -> dict[int, PostClient]:
    """One keep-alive PostClient per gunicorn worker, each connection known to sit on its worker."""
    workers = set(worker_children(server))
    clients: dict[int, PostClient] = {}
    for number in range(tries):
        if set(clients) == workers:
            break
        client = PostClient(server, batch=batch, interval=interval, reconnect=False, host=f"bench-client-{number}")
        conn = client.post_once(None)
        pid = worker_of(server, conn) if conn is not None else None
        if pid is not None and pid not in clients:
            client.conn = conn
            clients[pid] = client
        elif conn is not None:
            conn.close()
    return clients


def insert_frames() -> tuple[str, ...]:
    """py-spy frames of the INSERT itself inside store.insert: the lines that call executemany or COPY.

    sqlite3's executemany is C, so py-spy shows it as store.insert at that line.
    """
    frames = ["_copy_insert (gpumetrics/store.py", "do_executemany ("]
    source = (ROOT / "gpumetrics" / "store.py").read_text().splitlines()
    for number, line in enumerate(source, 1):
        if "cursor.executemany(" in line or "_copy_insert(connection" in line:
            frames.append(f"insert (gpumetrics/store.py:{number})")
    return tuple(frames)


def spy_label(stack: str, categories, default: str) -> str:
    """The first category (label, frame or tuple of frames) with a frame in the py-spy stack."""
    for label, frames in categories:
        if any(frame in stack for frame in ((frames,) if isinstance(frames, str) else frames)):
            return label
    return default
