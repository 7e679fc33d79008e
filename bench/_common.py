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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The command of `make serve`, the Dockerfile and tests/conftest.py's Server.
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real gunicorn master on a random free port; a context manager that stops it."""

    def __init__(self, env: dict[str, str], log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        log_dir = Path(log_dir or tempfile.gettempdir())
        self.log = log_dir / f"gunicorn-bench-{self.port}.log"
        full_env = {**os.environ, "LOG_LEVEL": "WARNING", **env, "PORT": str(self.port)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(GUNICORN, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

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
    """Give the database at `url` the service's schema, the way the service makes it.

    Database.upgrade (the Alembic migrations) where the service has it, else
    Database.create_schema, else gpumetrics.models.metadata.create_all, so that the
    service accepts the file as its own when it starts on it.
    """
    from gpumetrics.db import Database

    database = Database(url)
    try:
        if hasattr(database, "upgrade"):
            database.upgrade()
        elif hasattr(database, "create_schema"):
            database.create_schema()
        else:
            from gpumetrics.models import metadata

            with database.engine.begin() as conn:
                metadata.create_all(conn)
    finally:
        database.dispose()
