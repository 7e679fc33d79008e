"""Fixtures: settings on a fresh SQLite file per test, the app, its client, gunicorn."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

import config
from gpumetrics import create_app
from gpumetrics.state import app_state

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "")


def postgres_or_skip() -> str:
    """The server's URL, or a skip that says why (a failure in CI, where it must be there)."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests skipped: set TEST_POSTGRES_URL (.ci/run sets it)")
    probe = create_engine(POSTGRES_URL)
    try:
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL tests skipped: {POSTGRES_URL} does not answer: {error.orig}")
    finally:
        probe.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metrics.db'}"
    else:
        yield from fresh_postgres_schema()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """For what only PostgreSQL does: a schema of its own on the server."""
    yield from fresh_postgres_schema()


def fresh_postgres_schema() -> Iterator[str]:
    server = postgres_or_skip()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, pool_pre_ping=True)  # a test may terminate its connection
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def settings(database_url: str) -> config.Settings:
    """The defaults on a fresh database, but retention off: the sample records are from 2025."""
    return config.load({"DATABASE_URL": database_url, "METRICS_RETENTION_HOURS": "0"})


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app_state(app).db.dispose()


@pytest.fixture
def make_app(settings):
    """Apps on the test's database with some settings changed; each is disposed after the test."""
    made = []

    def make(**changes):
        made.append(create_app(settings.replace(**changes)))
        return made[-1]

    yield make
    for app in made:
        app_state(app).db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float = 60, every: float = 0.05):
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


class Server:
    """A real gunicorn master started with the Dockerfile's command, from the checkout at `root`."""

    def __init__(self, env: dict[str, str], cwd: Path, root: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"gunicorn-{self.port}.log"
        full_env = {**os.environ, **env, "PORT": str(self.port)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                GUNICORN, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def client_sockets(self) -> dict[int, str]:
        """The server's end of each client connection it holds open: client port -> socket inode, from /proc."""
        found = {}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16), fields[9]
            if local == self.port and remote and inode != "0":
                found[remote] = f"socket:[{inode}]"
        return found

    def owners(self, client_ports: list[int]) -> list[int]:
        """The worker (pid) that holds each client connection, 0 for none."""
        inodes, owner = self.client_sockets(), {}
        for pid in self.worker_pids():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    owner[os.readlink(fd)] = pid
        return [owner.get(inodes.get(port), 0) for port in client_ports]

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        """Until each of `count` workers has answered a connection: the first answer (wait_ready)
        can come while the others still boot, and a client that connects then stays with it."""
        seen, deadline = set(), time.monotonic() + timeout
        while len(seen - {0}) < count:
            assert time.monotonic() < deadline, f"workers that answered: {seen}"
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)) as conn:
                conn.request("GET", "/health")
                conn.getresponse().read()
                seen.update(self.owners([conn.sock.getsockname()[1]]))
        wait_for(lambda: not self.client_sockets(), timeout)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as when its host dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /health answers 200. On a loaded machine the master accepts connections a
        while before a worker answers them, so a slow answer is waited for, not a failure."""
        deadline = time.monotonic() + timeout
        with requests.Session() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.log.read_text()}")
                try:
                    if http.get(self.url + "/health", timeout=5).status_code == 200:
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"gunicorn not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gunicorn(tmp_path: Path, database_url: str) -> Iterator:
    """Start real gunicorn masters on the test's database; all are stopped after the test."""
    yield from servers(tmp_path, database_url)


@pytest.fixture
def gunicorn_on_postgres(tmp_path: Path, postgres_url: str) -> Iterator:
    yield from servers(tmp_path, postgres_url)


def servers(tmp_path: Path, database_url: str) -> Iterator:
    started: list[Server] = []

    def start(**env: str) -> Server:
        env.setdefault("DATABASE_URL", database_url)
        env.setdefault("METRICS_RETENTION_HOURS", "0")  # the sample records are from 2025: keep them
        server = Server(env, tmp_path)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
