"""What the real crawler sends is kept: long free text, processes without a GPU, float
integers, empty names; and what would poison the data is refused with a true reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT
from samples import iso, record

import config
from gpumetrics.jobs import retention
from gpumetrics.state import app_state

NOW = datetime.now(UTC)
PROCESS = {
    "timestamp": iso(NOW - timedelta(minutes=5)),
    "hostname": "trainer-01",
    "gpuId": "GPU-abc-uuid",
    "gpuName": "NVIDIA A100-PCIE-40GB",
    "metricType": "process",
    "pid": 1234,
    "processName": "python",
    "processUsedMemoryMiB": 2048,
}
GPU = {
    "timestamp": iso(NOW - timedelta(minutes=5)),
    "hostname": "trainer-01",
    "gpuId": "GPU-abc-uuid",
    "gpuName": "NVIDIA A100-PCIE-40GB",
    "metricType": "gpu",
    "totalMemoryMiB": 40960,
    "usedTotalMemoryMiB": 1234,
    "freeMemoryMiB": 39726,
    "gpuUtilPercent": 72,
    "memUtilPercent": 35,
    "temperatureCelsius": 62,
    "powerMilliwatts": 165000,
}


def items(client, **params):
    return client.get("/metrics", query_string={"limit": 10000, **params}).get_json()["items"]


@pytest.fixture
def live(make_app):
    """The service with its default windows (7 days kept, 1 hour of clock skew)."""
    return make_app(metrics_retention_hours=168.0)


@pytest.mark.parametrize("field", ["kernelName", "tag", "processName", "appName"])
def test_long_free_text_is_stored_whole_up_to_65536_and_cut_beyond_with_a_warning(live, field):
    client = live.test_client()
    kernels = ",".join(f"void kernel_{n}<float>(float*, int)" for n in range(2000))  # ~25 launches pass 255
    whole, longer = kernels[:65536], kernels[:65537] + "tail"
    answer = client.post("/metrics", json=[{**PROCESS, field: whole}, {**PROCESS, "pid": 7, field: longer}])
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["stored"] == 2 and body["rejected"] == []
    assert body["warnings"] == [{"index": 1, "field": field, "message": "cut to 65536 characters"}]
    stored = {item["pid"]: item[field] for item in items(client, metric="process")}
    assert stored == {1234: whole, 7: kernels[:65536]}
    canonical = record("process", seconds=0, **{field: longer}, timestamp=PROCESS["timestamp"], pid=9)
    assert client.post("/metrics", json=canonical).get_json()["warnings"][0]["field"] == field


@pytest.mark.parametrize("field, value", [("hostname", "h" * 256), ("gpuId", "G" * 256), ("gpuName", "n" * 256)])
def test_names_keep_their_limit_of_255(live, field, value):
    answer = live.test_client().post("/metrics", json={**GPU, field: value})
    assert answer.status_code == 422 and field in answer.get_json()["rejected"][0]["errors"]


def test_a_process_the_crawler_could_not_tie_to_a_gpu_is_stored_under_its_host(live):
    client = live.test_client()
    unknown = {**PROCESS, "gpuId": "unknown", "gpuName": "unknown"}
    assert client.post("/metrics", json=[unknown, GPU]).get_json()["stored"] == 5
    (process,) = items(client, metric="process", host="trainer-01")
    assert process["gpuIndex"] is None and process["uuid"] is None and process["host"] == "trainer-01"
    assert process["pid"] == 1234 and process["usedMiB"] == 2048
    assert [gpu["uuid"] for gpu in client.get("/gpus").get_json()["gpus"]] == ["GPU-abc-uuid"]
    assert [gpu["uuid"] for gpu in client.get("/stats").get_json()["gpus"]] == ["GPU-abc-uuid"]
    assert items(client, metric="process", gpuIndex=0) == [] and items(client, metric="process", host="other") == []
    again = client.post("/metrics", json=unknown).get_json()
    assert (again["stored"], again["duplicates"]) == (0, 1)
    empty = client.post("/metrics", json={**PROCESS, "gpuId": "", "pid": 5}).get_json()
    assert empty["stored"] == 1 and len(items(client, metric="process", host="trainer-01")) == 2


def test_retention_treats_a_process_without_a_gpu_like_any_record(app):
    client = app.test_client()  # retention is off while the old record goes in
    old = {**PROCESS, "gpuId": "unknown", "timestamp": iso(NOW - timedelta(hours=3))}
    assert client.post("/metrics", json=old).get_json()["stored"] == 1
    assert retention.purge(app_state(app).db, retention_hours=2) == 1
    assert items(client) == [] and client.get("/gpus").get_json()["gpus"] == []


def test_a_gpu_record_still_needs_a_uuid_or_an_index(live):
    for gpu_id in ("unknown", ""):
        answer = live.test_client().post("/metrics", json={**GPU, "gpuId": gpu_id})
        assert answer.status_code == 422 and "gpuId" in answer.get_json()["rejected"][0]["errors"]


def test_integral_floats_are_integers_and_fractions_are_not(live):
    client = live.test_client()
    ts = PROCESS["timestamp"]
    answer = client.post(
        "/metrics",
        json=[
            {**PROCESS, "pid": 1234.0, "gpuIndex": 0.0},
            record("process", pid=77.0, gpuIndex=1.0, timestamp=ts),
            {**PROCESS, "pid": 1234.5},
            record("power", gpuIndex=0.5, timestamp=ts),
        ],
    )
    body = answer.get_json()
    assert answer.status_code == 422 and body["stored"] == 2
    assert {r["index"]: list(r["errors"]) for r in body["rejected"]} == {2: ["pid"], 3: ["gpuIndex"]}
    stored = sorted((item["pid"], item["gpuIndex"]) for item in items(client, metric="process"))
    assert stored == [(77, 1), (1234, 0)] and all(type(p) is int for p, _ in stored)


def test_an_empty_hostname_or_host_means_the_local_host(live):
    client = live.test_client()
    ts = GPU["timestamp"]
    assert (
        client.post("/metrics", json=[{**GPU, "hostname": ""}, record("power", host="", timestamp=ts)]).status_code
        == 201
    )
    hosts = {gpu["host"] for gpu in client.get("/gpus").get_json()["gpus"]}
    assert hosts == {None}


def test_a_record_from_the_future_is_refused_naming_the_servers_time(live, make_app):
    client = live.test_client()
    for sent in (
        {**GPU, "timestamp": "9999-12-31T00:00:00Z"},
        record("power", timestamp=iso(NOW + timedelta(hours=2))),
    ):
        answer = client.post("/metrics", json=sent)
        (message,) = answer.get_json()["rejected"][0]["errors"]["timestamp"]
        assert answer.status_code == 422 and "MAX_CLOCK_SKEW_SEC=3600" in message
        server_time = datetime.fromisoformat(message.rsplit(" ", 1)[1].rstrip("."))
        assert abs(server_time - datetime.now(UTC)) < timedelta(minutes=1)
    assert client.post("/metrics", json=record("power", timestamp=iso(NOW + timedelta(minutes=50)))).status_code == 201
    assert client.get("/gpus").get_json()["gpus"][0]["lastSeen"] < "9999"
    unchecked = make_app(max_clock_skew_sec=None).test_client()
    assert unchecked.post("/metrics", json=record("power", timestamp="9999-12-31T00:00:00Z")).status_code == 201


def test_a_record_older_than_everything_kept_is_refused_with_the_reason(live, make_app):
    answer = live.test_client().post("/metrics", json=[{**GPU, "timestamp": iso(NOW - timedelta(days=91))}, GPU])
    body = answer.get_json()
    assert answer.status_code == 422 and body["stored"] == 4
    (message,) = body["rejected"][0]["errors"]["timestamp"]
    assert message.startswith(
        "Older than ROLLUP_RETENTION_DAYS=90 (the rollups; the records: METRICS_RETENTION_HOURS=168): nothing before "
    )
    records_only = make_app(metrics_retention_hours=168.0, rollup_retention_days=1.0).test_client()
    answer = records_only.post("/metrics", json={**GPU, "timestamp": iso(NOW - timedelta(days=8))})
    (message,) = answer.get_json()["rejected"][0]["errors"]["timestamp"]
    assert message.startswith("Older than METRICS_RETENTION_HOURS=168: nothing before ")


def test_import_reports_lines_older_than_the_window_like_every_rejection(tmp_path, settings):
    path = tmp_path / "old.jsonl"
    lines = [{**GPU, "timestamp": iso(NOW - timedelta(days=100))}, GPU]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {**os.environ, "DATABASE_URL": settings.database_url, "METRICS_RETENTION_HOURS": "168"}
    done = subprocess.run(
        [sys.executable, "-m", "gpumetrics", "import", str(path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert f"{path}: 2 lines, 4 stored, 0 duplicates, 1 rejected" in done.stdout
    assert "line 1: invalid record: timestamp: Older than ROLLUP_RETENTION_DAYS=90" in done.stdout


@pytest.mark.parametrize("sent", [record("temperature", celsius=-273.16), {**GPU, "temperatureCelsius": -300}])
def test_a_temperature_below_absolute_zero_is_refused(live, sent):
    sent = {**sent, "timestamp": GPU["timestamp"]}
    answer = live.test_client().post("/metrics", json=sent)
    assert answer.status_code == 422
    field = "celsius" if "metric" in sent else "temperatureCelsius"
    assert answer.get_json()["rejected"][0]["errors"][field] == ["Must be from -273.15 to 1e+15."]
    answer = live.test_client().post(
        "/metrics", json=record("temperature", celsius=-273.15, timestamp=GPU["timestamp"])
    )
    assert answer.status_code == 201, answer.get_json()


def test_settings_from_the_environment_set_the_windows():
    settings = config.load({"MAX_CLOCK_SKEW_SEC": "0", "METRICS_RETENTION_HOURS": "0"})
    assert settings.max_clock_skew_sec is None and settings.metrics_retention_hours is None
