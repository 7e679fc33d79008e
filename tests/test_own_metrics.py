"""The service's own metrics in GET /prometheus (gpumetrics_*): what they count, in one process and under gunicorn.

In one process (the Flask test client) the counters are the process's own and live as
long as it, so these tests compare a scrape after with one before. Under gunicorn with
4 workers the counts are prometheus-client's multiprocess files, summed at each scrape:
there a test posts a known number of records and finds exactly those counts, whichever
worker answers, also after a worker is killed, and with the import command's too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import ROOT, wait_for
from promtools import check_metrics, samples, value
from samples import iso, record

from gpumetrics import __version__
from gpumetrics.jobs import retention
from gpumetrics.jobs.scheduler import tailers
from gpumetrics.state import app_state

SOURCES = ("http", "file", "import")
REASONS = ("invalid", "malformed", "future", "expired")


def ago(seconds: float = 0) -> str:
    return iso(datetime.now(UTC) - timedelta(seconds=seconds))


def scrape(client) -> str:
    answer = client.get("/prometheus")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def counts(text: str) -> dict[tuple[str, ...], float]:
    """Records stored, duplicates and rejected, by source (and reason)."""
    out = {}
    for source in SOURCES:
        out["stored", source] = value(text, "gpumetrics_records_stored_total", source=source)
        out["duplicates", source] = value(text, "gpumetrics_records_duplicates_total", source=source)
        for reason in REASONS:
            out["rejected", source, reason] = value(
                text, "gpumetrics_records_rejected_total", source=source, reason=reason
            )
    return out


def grown(before: dict, after: dict) -> dict:
    """What grew, and by how much."""
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_every_counter_from_the_start_the_build_and_the_database_size(client):
    text = scrape(client)
    assert len(counts(text)) == 3 * 2 + 3 * len(REASONS)
    for source in SOURCES:
        assert any(labels == {"source": source} for labels, _ in samples(text, "gpumetrics_records_stored_total"))
    assert samples(text, "gpumetrics_build_info") == [({"version": __version__}, 1.0)]
    check_metrics(text)
    first = value(text, "gpumetrics_database_size_bytes")
    batch = [
        record("process", 0, gpu, timestamp=ago(5), pid=pid, processName="x" * 500)
        for gpu in range(8)
        for pid in range(250)
    ]
    assert client.post("/metrics", json=batch).status_code == 201
    assert first > 0 and value(scrape(client), "gpumetrics_database_size_bytes") > first, "the database's size"


def test_a_post_counts_stored_duplicates_and_each_rejection_with_its_reason(make_app):
    """Retention 1 h and rollups 1 day: a record 2 days old is expired; one 2 hours ahead, future."""
    client = make_app(metrics_retention_hours=1.0, rollup_retention_days=1.0).test_client()
    before = counts(scrape(client))
    fresh = [record("power", 0, gpu, timestamp=ago(5)) for gpu in range(5)]
    assert client.post("/metrics", json=fresh).status_code == 201
    spoiled = [
        *fresh[:2],
        record("temperature", 0, 0, timestamp=ago(5)),
        record("power", 0, 0, timestamp=ago(5), watts="lots"),
        record("power", 0, 1, timestamp=ago(-7200)),
        record("power", 0, 2, timestamp=ago(2 * 86400)),
    ]
    assert client.post("/metrics", json=spoiled).status_code == 422
    assert grown(before, counts(scrape(client))) == {
        ("stored", "http"): 6,
        ("duplicates", "http"): 2,
        ("rejected", "http", "invalid"): 1,
        ("rejected", "http", "future"): 1,
        ("rejected", "http", "expired"): 1,
    }


def _durations(text: str, endpoint: str, method: str, status: str) -> tuple[float, float]:
    labels = {"endpoint": endpoint, "method": method, "status": status}
    count = value(text, "gpumetrics_http_request_duration_seconds_count", **labels)
    return count, value(text, "gpumetrics_http_request_duration_seconds_sum", **labels)


def test_request_durations_by_route_method_and_status(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/metrics/latest", query_string={"gpuIndex": 0}).status_code == 200
    assert client.get("/metrics/latest", query_string={"gpuIndex": -1}).status_code == 422
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)
    for (endpoint, method, status), times in {
        ("/metrics/latest", "GET", "200"): 3,
        ("/metrics/latest", "GET", "422"): 1,
        ("other", "GET", "404"): 1,
        ("/prometheus", "GET", "200"): 1,  # the scrape before
    }.items():
        count, total = _durations(after, endpoint, method, status)
        was_count, was_total = _durations(before, endpoint, method, status)
        assert count - was_count == times and total > was_total, (endpoint, status)
    buckets = samples(after, "gpumetrics_http_request_duration_seconds_bucket")
    mine = [
        v
        for labels, v in buckets
        if (labels["endpoint"], labels["method"], labels["status"]) == ("/metrics/latest", "GET", "200")
    ]
    assert mine == sorted(mine) and mine[-1] == _durations(after, "/metrics/latest", "GET", "200")[0]


def test_a_tailed_file_counts_lines_read_rejected_and_bytes_behind(make_app, tmp_path):
    path = tmp_path / "ws_out.jsonl"
    app = make_app(enable_ws_file=True, input_ws_path=str(path))
    client, key = app.test_client(), str(path.absolute())
    good = [json.dumps(record("power", 0, gpu, timestamp=ago(5))) for gpu in range(3)]
    partial = '{"timestamp": "'
    path.write_text("\n".join([*good, "not json", json.dumps(record("power", watts=-1)), good[0]]) + "\n" + partial)
    before = scrape(client)
    [tailer] = tailers(app_state(app).settings, app_state(app).db)
    assert tailer.poll() == 6
    after = scrape(client)
    assert grown(counts(before), counts(after)) == {
        ("stored", "file"): 3,
        ("duplicates", "file"): 1,
        ("rejected", "file", "malformed"): 1,
        ("rejected", "file", "invalid"): 1,
    }
    for name, grew in (("gpumetrics_tail_lines_read_total", 6), ("gpumetrics_tail_lines_rejected_total", 2)):
        assert value(after, name, path=key) - value(before, name, path=key) == grew, name
    assert value(after, "gpumetrics_tail_bytes_behind", path=key) == len(partial)


def test_retention_counts_what_it_deleted_and_when_it_last_ran(client, app):
    old = [record("power", second, 0, timestamp=ago(3 * 3600 + second)) for second in range(7)]
    assert client.post("/metrics", json=old).status_code == 201
    before = scrape(client)
    assert not samples(before, "gpumetrics_retention_last_run_timestamp_seconds"), "no run yet"
    started = time.time()
    assert retention.purge(app_state(app).db, 1.0) == 7
    after = scrape(client)
    name = "gpumetrics_retention_records_deleted_total"
    assert value(after, name) - value(before, name) == 7
    [(_, finished)] = samples(after, "gpumetrics_retention_last_run_timestamp_seconds")
    [(_, took)] = samples(after, "gpumetrics_retention_last_run_duration_seconds")
    assert started - 1 <= finished <= time.time() + 1 and 0 <= took <= time.time() - started + 1


def test_a_command_runs_where_the_metrics_folder_is_not(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR naming no folder (a command run where the service is not):
    the command counts for itself, says so once, and makes no folder or file."""
    missing = tmp_path / "not-here"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'metrics.db'}", "METRICS_RETENTION_HOURS": "24"}
    done = subprocess.run(
        [sys.executable, "-m", "gpumetrics", "purge"],
        cwd=ROOT,
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "deleted 0 records" in done.stdout, done
    assert "is not a folder: this process's counts stay its own" in done.stderr
    assert not missing.exists()


# ---- under gunicorn: 4 workers, one count ------------------------------------------------


def _post(url: str, body: list) -> requests.Response:
    """On a connection of its own, so that gunicorn hands the requests to its workers in turn."""
    return requests.post(url + "/metrics", json=body, headers={"Connection": "close"}, timeout=30)


def _scrape(url: str) -> str:
    answer = requests.get(url + "/prometheus", headers={"Connection": "close"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def _import(tmp_path: Path, env: dict[str, str]) -> None:
    """`python -m gpumetrics import` with `env`: 5 lines, 3 records stored, a duplicate, a line not JSON."""
    lines = [json.dumps(record("memory", 0, gpu, host="imported", timestamp=ago(5))) for gpu in range(3)]
    path = tmp_path / "backfill.jsonl"
    path.write_text("\n".join([*lines, lines[0], "{oops"]) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "gpumetrics", "import", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "5 lines, 3 stored, 1 duplicates, 1 rejected" in done.stdout, done


@pytest.mark.slow
def test_exact_counts_through_4_workers_a_dead_one_and_the_import_command(gunicorn, database_url, tmp_path):
    """20 POSTs of 10 new records, 20 of 2 re-sent and 1 invalid, each on a connection of its
    own, spread over 4 workers: every scrape, whichever worker answers it, finds exactly 200
    stored, 40 duplicates, 20 rejected and 20 timed POSTs of each status; the same after a
    worker is killed. The folder named by PROMETHEUS_MULTIPROC_DIR is emptied at start, and the import
    command run with it is counted too."""
    folder = tmp_path / "multiproc"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left by an earlier start")
    server = gunicorn(WORKERS="4", PROMETHEUS_MULTIPROC_DIR=str(folder))
    assert not (folder / "counter_999999.db").exists(), "emptied at start"
    for number in range(20):
        batch = [record("power", 0, gpu, host=f"h{number}", timestamp=ago(5)) for gpu in range(10)]
        assert _post(server.url, batch).status_code == 201
        answer = _post(server.url, [*batch[:2], record("power", 0, 0, host="x", watts="lots")])
        assert answer.status_code == 422 and answer.json()["duplicates"] == 2
    counted = {f.name.split("_")[-1] for f in folder.glob("counter_*.db")}
    assert len(counted) >= 2, f"more than one worker counted: {sorted(counted)}"
    expected = {("stored", "http"): 200, ("duplicates", "http"): 40, ("rejected", "http", "invalid"): 20}

    def check(text: str) -> None:
        assert {key: v for key, v in counts(text).items() if v} == expected
        for status in ("201", "422"):
            timed = {"endpoint": "/metrics", "method": "POST", "status": status}
            assert value(text, "gpumetrics_http_request_duration_seconds_count", **timed) == 20, status

    for _ in range(4):
        check(_scrape(server.url))
    killed = min(server.worker_pids())
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: killed not in server.worker_pids(), timeout=30)  # reaped; its files stay, counted
    for _ in range(4):
        check(_scrape(server.url))
    _import(tmp_path, {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(folder)})
    expected |= {("stored", "import"): 3, ("duplicates", "import"): 1, ("rejected", "import", "malformed"): 1}
    check_metrics(_scrape(server.url))
    for _ in range(4):
        check(_scrape(server.url))
    server.kill()  # nothing left to see in a graceful stop of 4 workers; it takes seconds
