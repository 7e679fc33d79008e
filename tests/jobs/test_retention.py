"""Retention: the cut-off, bounded batches, GPUs that lose every record, /health."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from samples import iso, record

from gpumetrics.jobs import retention
from gpumetrics.state import app_state
from gpumetrics.store import retention as expiry


def test_purge_deletes_exactly_what_is_older_than_the_window_in_bounded_batches(app, client, monkeypatch):
    now = datetime.now(UTC)
    old = [
        record("power", gpu=g, timestamp=iso(now - timedelta(hours=3, seconds=s))) for g in (0, 1) for s in range(25)
    ]
    young = [record("power", gpu=0, timestamp=iso(now - timedelta(hours=1, seconds=s))) for s in range(5)]
    client.post("/metrics", json=old + young + [record("memory", gpu=5, timestamp=iso(now - timedelta(hours=4)))])
    sizes = []
    real_delete = expiry.delete_expired

    def counting(conn, cutoff, batch):
        gone = real_delete(conn, cutoff, batch)
        sizes.append(gone)
        return gone

    monkeypatch.setattr(expiry, "delete_expired", counting)
    deleted = retention.purge(app_state(app).db, retention_hours=2, rollup_days=2 / 24, batch=7, pause=0)
    assert deleted == 51
    assert sizes == [7, 7, 7, 7, 7, 7, 7, 2]
    left = client.get("/metrics", query_string={"limit": 100}).get_json()["items"]
    assert sorted(r["timestamp"] for r in left) == sorted(r["timestamp"] for r in young)
    gpus = client.get("/gpus").get_json()["gpus"]
    assert [g["gpuIndex"] for g in gpus] == [0], "GPUs with neither records nor rollups left are forgotten"
    assert gpus[0]["firstSeen"] == min(r["timestamp"] for r in young).replace(".000000", "")


def test_nothing_to_delete_is_one_short_batch(app, client):
    client.post("/metrics", json=record("power", timestamp=iso(datetime.now(UTC))))
    assert retention.purge(app_state(app).db, retention_hours=1) == 0
    assert len(client.get("/metrics").get_json()["items"]) == 1


def test_health_shows_the_last_run(make_app):
    app = make_app(metrics_retention_hours=168.0)
    client = app.test_client()
    assert client.get("/health").get_json()["jobs"]["retention"]["lastRun"] is None
    ten_days_ago = iso(datetime.now(UTC) - timedelta(days=10))  # kept in the rollups' window
    assert client.post("/metrics", json=record("power", timestamp=ten_days_ago)).status_code == 201
    retention.purge(app_state(app).db, retention_hours=168)
    run = client.get("/health").get_json()["jobs"]["retention"]
    assert run["retentionHours"] == 168
    assert run["lastRun"]["deleted"] == 1 and run["lastRun"]["batches"] == 1
    assert run["lastRun"]["finishedAt"].endswith("Z")


def test_a_gpu_whose_records_expired_stays_while_its_rollups_do(app, client):
    now = datetime.now(UTC)
    client.post(
        "/metrics", json=[record("power", gpu=3, timestamp=iso(now - timedelta(hours=3, seconds=s))) for s in range(5)]
    )
    assert retention.purge(app_state(app).db, retention_hours=2, rollup_days=1, pause=0) == 5
    (gpu,) = client.get("/gpus").get_json()["gpus"]
    assert gpu["gpuIndex"] == 3 and gpu["firstSeen"] < iso(now - timedelta(hours=3))
    assert client.get("/metrics").get_json()["items"] == []
    total = client.get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()
    assert total["count"] == 5, "the rollups still count the expired records"
    retention.purge(app_state(app).db, retention_hours=2, rollup_days=2 / 24, pause=0)
    assert client.get("/gpus").get_json()["gpus"] == []


def test_spans_older_than_their_window_go_with_their_processes_and_summary(app, client):
    from api.test_events import LINES, UPTIME, post_lines

    post_lines(client, LINES)  # five spans of pid 4242, three days after boot
    later = {"hostname": "trainer-01", "type": "kernel", "pid": 777, "app": "infer", "kernel": "gemv"}
    later |= {"grid": [1, 1, 1], "block": [32, 1, 1], "shared_mem_bytes": 0, "cuda_error": "cudaSuccess"}
    start = UPTIME + 10 * 3600 * 10**9
    # Ten hours on: the first five spans are that old.
    post_lines(client, [json.dumps(later | {"ts_start_ns": start, "ts_end_ns": start + 5000, "duration_ns": 5000})])
    assert len(client.get("/spans").get_json()["items"]) == 6

    assert retention.purge_spans(app_state(app).db, retention_hours=5, batch=2, pause=0) == 5
    assert [s["name"] for s in client.get("/spans").get_json()["items"]] == ["gemv"]
    assert [p["pid"] for p in client.get("/processes").get_json()["processes"]] == [777]
    assert [k["name"] for k in client.get("/spans/summary").get_json()["items"]] == ["gemv"]
    assert retention.purge_spans(app_state(app).db, retention_hours=5, pause=0) == 0
