"""Tailed files under gunicorn with hostnames that change or differ: checkpoints belong to the file.

A container started anew gets a new hostname; hosts sharing one PostgreSQL have their
own. Each master here runs in a new UTS namespace (`unshare --uts`, then `hostname NAME`),
which is exactly what a container runtime gives a container: its own hostname, while the
volume (the file) and the database stay the same. That takes root or CAP_SYS_ADMIN; the
tests are skipped, saying so, where it is refused. conftest's Server starts
`conftest.GUNICORN`; these tests put the namespace in front of that command (monkeypatch).
"""

from __future__ import annotations

import json
import subprocess

import conftest
import pytest
import requests
from conftest import wait_for
from samples import record

pytestmark = pytest.mark.slow
# sh -c SCRIPT NAME [SOURCE TARGET] COMMAND...: "$0" is the hostname to take.
HOSTNAME = 'hostname "$0" && exec "$@"'
HOSTNAME_AND_MOUNT = 'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"'


@pytest.fixture(autouse=True)
def namespaces_allowed():
    probe = subprocess.run(["unshare", "--uts", "--mount", "hostname", "probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot give a process its own hostname here (needs root): {probe.stderr.strip()}")


def as_host(monkeypatch, name: str, *mount: str) -> None:
    """The next server starts as if on host `name` (and with `mount` = (source, target) bound)."""
    options, script = (["--uts", "--mount"], HOSTNAME_AND_MOUNT) if mount else (["--uts"], HOSTNAME)
    monkeypatch.setattr(conftest, "GUNICORN", ["unshare", *options, "sh", "-c", script, name, *mount, *GUNICORN])


GUNICORN = list(conftest.GUNICORN)


def lines(start: int, count: int, host: str | None = None) -> str:
    extra = {"host": host} if host else {}
    return "".join(
        json.dumps(record("power", n / 1000, gpu=n % 4, **extra)) + "\n" for n in range(start, start + count)
    )


def health(server) -> dict:
    return requests.get(server.url + "/health", timeout=30).json()


def count(server) -> int:
    return requests.get(server.url + "/metrics/aggregate", params={"aggregate": "count"}, timeout=30).json()["value"]


def test_a_service_restarted_under_another_hostname_reads_on_where_it_stopped(gunicorn, tmp_path, monkeypatch):
    """Killed mid-backlog on host "gpu-node-old", started again as "gpu-node-new" on the same
    file and database: every line stored once, none read twice (0 duplicates)."""
    path, first, later = tmp_path / "ws_out.jsonl", 30_000, 500
    path.write_text(lines(0, first))
    env = {"WORKERS": "2", "ENABLE_WS_FILE": "true", "INPUT_WS_PATH": str(path), "FILE_POLL_INTERVAL_SEC": "0.2"}
    as_host(monkeypatch, "gpu-node-old")
    old = gunicorn(**env)
    wait_for(lambda: health(old)["jobs"]["files"][str(path)]["recordsStored"] > 0)
    before_kill = health(old)["jobs"]["files"][str(path)]["linesRead"]
    old.kill()
    assert before_kill < first, "the kill must land in the middle of the backlog"
    with path.open("a") as out:
        out.write(lines(first, later))

    as_host(monkeypatch, "gpu-node-new")
    new = gunicorn(**env)
    state = wait_for(lambda: (f := health(new)["jobs"]["files"][str(path)])["linesRead"] == first + later and f)
    assert state == {
        "linesRead": first + later,
        "recordsStored": first + later,
        "duplicates": 0,
        "linesRejected": 0,
        "bytesBehind": 0,
        "state": "ok",
    }
    assert health(new)["jobs"]["runners"]["tail"].startswith("gpu-node-new:")
    assert count(new) == first + later


def test_two_hosts_on_one_postgresql_tail_their_own_file_at_one_path(gunicorn_on_postgres, tmp_path, monkeypatch):
    """Two hosts, one database, and on each a file at the same path: each master also gets a
    mount namespace of its own where that path's folder is its own disk (a bind mount)."""
    shared = tmp_path / "data"
    shared.mkdir()
    path, disks = shared / "ws_out.jsonl", {name: tmp_path / name for name in ("node-a", "node-b")}
    for size, (name, disk) in enumerate(disks.items(), start=1):
        disk.mkdir()
        (disk / path.name).write_text(lines(0, 1000 * size, host=name))
    env = {"WORKERS": "2", "ENABLE_WS_FILE": "true", "INPUT_WS_PATH": str(path), "FILE_POLL_INTERVAL_SEC": "0.2"}
    servers = {}
    for name, disk in disks.items():
        as_host(monkeypatch, name, str(disk), str(shared))
        servers[name] = gunicorn_on_postgres(**env)

    def read(name: str, expected: int) -> dict:
        return wait_for(lambda: (f := health(servers[name])["jobs"]["files"][str(path)])["linesRead"] == expected and f)

    assert (read("node-a", 1000)["duplicates"], read("node-b", 2000)["duplicates"]) == (0, 0)
    for name, disk in disks.items():
        with (disk / path.name).open("a") as out:
            out.write(lines(5000, 10, host=name))
    assert read("node-a", 1010)["recordsStored"] == 1010 and read("node-b", 2010)["recordsStored"] == 2010
    assert count(servers["node-a"]) == 3020
