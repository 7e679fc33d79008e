"""Several replicas on one PostgreSQL database: one runs each job; when it dies another takes over."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import wait_for
from samples import record

pytestmark = pytest.mark.slow


def test_two_masters_share_the_jobs_and_the_survivor_takes_over(gunicorn_on_postgres, tmp_path):
    path = tmp_path / "ws_out.jsonl"
    path.write_text("".join(json.dumps(record("power", s)) + "\n" for s in range(1000)))
    env = {
        "WORKERS": "2",
        "ENABLE_WS_FILE": "true",
        "INPUT_WS_PATH": str(path),
        "FILE_POLL_INTERVAL_SEC": "0.2",
        "METRICS_RETENTION_HOURS": "1000000",  # runs, deletes nothing
        "RETENTION_CLEAN_INTERVAL_SEC": "1",
    }
    masters = [gunicorn_on_postgres(**env), gunicorn_on_postgres(**env)]

    def health(server):
        return requests.get(server.url + "/health", timeout=30).json()["jobs"]

    def holder_of(runners):
        """The master whose worker holds the lock named by `runners`' value."""
        pid = int(runners.split(":")[1])
        return next(m for m in masters if pid in m.worker_pids())

    runners = wait_for(lambda: (r := health(masters[0])["runners"])["tail"] and r["retention"] and r)
    assert health(masters[1])["runners"] == runners, "every replica sees the same runners"
    wait_for(lambda: health(masters[0])["files"][str(path)]["linesRead"] == 1000)
    victim = holder_of(runners["retention"])
    survivor = masters[1 - masters.index(victim)]
    victim.kill()

    taken = wait_for(lambda: (r := health(survivor)["runners"])["retention"] not in (None, runners["retention"]) and r)
    assert holder_of(taken["retention"]) is survivor
    # The victim's lock lingers until PostgreSQL has seen its connection close: wait for the takeover.
    wait_for(lambda: (t := health(survivor)["runners"]["tail"]) and int(t.split(":")[1]) in survivor.worker_pids())
    last_run = health(survivor)["retention"]["lastRun"]["finishedAt"]
    wait_for(lambda: health(survivor)["retention"]["lastRun"]["finishedAt"] != last_run)

    with path.open("a") as out:
        out.write("".join(json.dumps(record("power", s)) + "\n" for s in range(1000, 1500)))
    state = wait_for(lambda: (f := health(survivor)["files"][str(path)])["linesRead"] == 1500 and f)
    assert state["recordsStored"] == 1500 and state["linesRejected"] == 0
    count = requests.get(survivor.url + "/metrics", params={"aggregate": "count"}, timeout=30).json()["value"]
    assert count == 1500
