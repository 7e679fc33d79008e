"""Fixtures: settings on a fresh SQLite file per test, the app, its client, gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import config
from gpumetrics import create_app

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load({"DATABASE_URL": f"sqlite:///{tmp_path / 'metrics.db'}"})


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["gpumetrics"]["db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real gunicorn master started with the Dockerfile's command."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"gunicorn-{self.port}.log"
        full_env = {**os.environ, **env, "PORT": str(self.port)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(GUNICORN, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
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
def gunicorn(tmp_path: Path) -> Iterator:
    """Start real gunicorn masters; every one started is stopped after the test."""
    started: list[Server] = []

    def start(**env: str) -> Server:
        env.setdefault("DATABASE_URL", f"sqlite:///{tmp_path / 'metrics.db'}")
        server = Server(env, tmp_path)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
