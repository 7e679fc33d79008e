"""Exactly one job runner under gunicorn: kill it mid-backlog, and nothing is lost or doubled."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
import requests
from conftest import wait_for
from samples import record

pytestmark = pytest.mark.slow
LINES = 150_000


def test_killing_the_job_runner_mid_backlog_loses_and_doubles_nothing(gunicorn, tmp_path):
    path = tmp_path / "ws_out.jsonl"
    with path.open("w") as out:
        for n in range(LINES):
            out.write(json.dumps(record("power", n / 1000, gpu=n % 4, watts=n % 300)) + "\n")
    server = gunicorn(
        WORKERS="3",
        ENABLE_WS_FILE="true",
        INPUT_WS_PATH=str(path),
        FILE_POLL_INTERVAL_SEC="0.2",
    )

    def file_state():
        return requests.get(server.url + "/health", timeout=30).json()["jobs"]["files"][str(path)]

    def runner():
        holder = requests.get(server.url + "/health", timeout=30).json()["jobs"]["runners"]["tail"]
        return holder and int(holder.split(":")[1])

    wait_for(lambda: file_state()["recordsStored"] > 0)
    first = runner()
    before_kill = file_state()["linesRead"]
    os.kill(first, signal.SIGKILL)
    assert before_kill < LINES, "the kill must land in the middle of the backlog"

    second = wait_for(lambda: (pid := runner()) != first and pid)
    final = wait_for(lambda: (state := file_state())["linesRead"] == LINES and state)
    assert final == {
        "linesRead": LINES,
        "recordsStored": LINES,
        "duplicates": 0,
        "linesRejected": 0,
        "bytesBehind": 0,
        "state": "ok",
    }
    count = requests.get(server.url + "/metrics", params={"aggregate": "count"}, timeout=30).json()
    assert count["value"] == LINES

    log = server.log.read_text()
    leaders = re.findall(r"pid (\d+) runs the tail job", log)
    assert leaders == [str(first), str(second)], "exactly one runner at a time: the first, then its successor"
    assert len(re.findall(r"Booting worker", log)) == 4, "three workers, and one to replace the killed one"
