"""Starts that explain themselves: every entry point stops with one line for a setting or
database it cannot use, waits for a PostgreSQL that is still starting, and comes up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import GUNICORN, ROOT, free_port
from sqlalchemy.engine import make_url
from tcp_proxy import Proxy

import config
from gpumetrics import startup

# Every way the service and its commands start: gunicorn's master, `python wsgi.py`, each command.
ENTRY_POINTS = {
    "gunicorn": GUNICORN,
    "python wsgi.py": [sys.executable, "wsgi.py"],
    "import": [sys.executable, "-m", "gpumetrics", "import", __file__],
    "purge": [sys.executable, "-m", "gpumetrics", "purge"],
    "migrate": [sys.executable, "-m", "gpumetrics", "migrate"],
}


def start(command: list[str], prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PORT": str(free_port()), **env}
    return subprocess.run(
        [*prefix, *command], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


def assert_one_line(done: subprocess.CompletedProcess, expected: str) -> None:
    """A non-zero exit, no traceback, and stderr's only line: `gpumetrics: ...` containing `expected`."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpumetrics: ") and expected in lines[0], lines[0]


def every_entry_point(expected: str, **env: str) -> None:
    with ThreadPoolExecutor(max_workers=len(ENTRY_POINTS)) as pool:
        runs = {name: pool.submit(start, command, **env) for name, command in ENTRY_POINTS.items()}
    for name, run in runs.items():
        try:
            assert_one_line(run.result(), expected)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


@pytest.fixture
def garbage_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    return path


CASES = {
    "folder missing": (
        {"DATABASE_URL": "sqlite:///{tmp}/missing/metrics.db"},
        "the folder {tmp}/missing does not exist",
    ),
    "sqlite URL with two slashes": (
        {"DATABASE_URL": "sqlite://metrics.db"},
        "invalid DATABASE_URL='sqlite://metrics.db'",
    ),
    "file that is no database": ({"DATABASE_URL": "sqlite:///{tmp}/notes.db"}, "SQLite cannot use the file"),
    "postgresql refusing": (
        {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:{closed}/test", "DATABASE_WAIT_SEC": "0"},
        "PostgreSQL did not accept a connection within DATABASE_WAIT_SEC=0 s (Connection refused)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_entry_point_stops_with_one_line_naming_setting_value_and_remedy(case, tmp_path, garbage_file):
    env, expected = CASES[case]
    values = {"tmp": tmp_path, "closed": free_port()}
    every_entry_point(expected.format(**values), **{name: value.format(**values) for name, value in env.items()})


def test_an_unwritable_data_folder_names_the_folder_and_the_user_id():
    """As the image's user meets a volume it does not own. Root writes anywhere, so as root
    the process runs without capabilities (DAC override), which makes it like any user."""
    folder = Path(tempfile.mkdtemp(prefix="gpumetrics-ro-"))
    try:
        folder.chmod(0o555)
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:
            os.chown(folder, 65534, 65534)
            prefix = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
        url = f"sqlite:///{folder}/metrics.db"
        for command in (GUNICORN, ENTRY_POINTS["migrate"]):
            done = start(command, prefix, DATABASE_URL=url)
            assert_one_line(done, f"user id {os.geteuid()} cannot write in the folder {folder}")
            assert f"DATABASE_URL={url}" in done.stderr and f"chown {os.geteuid()} {folder}" in done.stderr
        assert not any(folder.iterdir())
    finally:
        shutil.rmtree(folder)


def test_postgresql_refusing_for_longer_than_the_wait_gives_up_with_one_line_after_a_line_per_attempt():
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    done = start(ENTRY_POINTS["migrate"], DATABASE_URL=url, DATABASE_WAIT_SEC="2.5")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    *attempts, last = done.stderr.strip().splitlines()
    assert last.startswith("gpumetrics: DATABASE_URL=") and "within DATABASE_WAIT_SEC=2.5 s" in last
    assert [re.search(r"attempt (\d+): Connection refused", line).group(1) for line in attempts] == ["1", "2"]


def restore_after_attempts(proxy: Proxy, logs: Path, attempts: int) -> threading.Thread:
    """Open the proxy once the service's log shows `attempts` failed attempts."""

    def watch() -> None:
        wanted = f"attempt {attempts}: "
        for _ in range(600):
            if any(wanted in log.read_text() for log in logs.glob("gunicorn-*.log")):
                proxy.restore()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.slow
def test_the_service_waits_for_postgresql_that_is_still_starting(gunicorn_on_postgres, postgres_url, tmp_path):
    """PostgreSQL starts listening after the service's second attempt (a compose file that starts both at once)."""
    url = make_url(postgres_url)
    proxy = Proxy((url.host, url.port or 5432))
    proxy.cut()  # its port is now closed: connections are refused, as before PostgreSQL listens
    watcher = restore_after_attempts(proxy, tmp_path, attempts=2)
    try:
        server = gunicorn_on_postgres(
            DATABASE_URL=url.set(port=proxy.port).render_as_string(hide_password=False), DATABASE_WAIT_SEC="30"
        )
        assert requests.get(server.url + "/gpus", timeout=10).status_code == 200
        log = server.log.read_text()
        attempts = re.findall(r"WARNING gpumetrics\.startup: .*attempt (\d+): Connection refused; trying again", log)
        assert attempts in (["1", "2"], ["1", "2", "3"]), log
        assert "Traceback" not in log
    finally:
        watcher.join()
        proxy.cut()


@pytest.mark.parametrize(
    "host, bind",
    [
        ("0.0.0.0", "0.0.0.0:8080"),
        ("127.0.0.1", "127.0.0.1:8080"),
        ("::", "[::]:8080"),
        ("localhost", "localhost:8080"),
    ],
)
def test_host_chooses_the_listen_address(host, bind):
    assert startup.bind_address(config.load({"HOST": host})) == bind


def test_a_host_that_is_no_address_stops_the_service_with_one_line():
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(start, ENTRY_POINTS[name], HOST="no-such-host.invalid")
            for name in ("gunicorn", "python wsgi.py")
        ]
    for run in runs:
        assert_one_line(run.result(), "invalid HOST='no-such-host.invalid': expected an IP address")


@pytest.mark.parametrize(
    "url", ["postgres://gpumetrics:hunter2@db/x", "postgresql+psycopg://gpumetrics:hunter2@127.0.0.1:{closed}/x"]
)
def test_the_line_never_shows_the_password_of_database_url(url):
    done = start(ENTRY_POINTS["migrate"], DATABASE_URL=url.format(closed=free_port()), DATABASE_WAIT_SEC="0")
    assert_one_line(done, "gpumetrics:***@")
    assert "hunter2" not in done.stderr
