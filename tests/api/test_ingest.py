"""POST /metrics: every kind, every bad input with its status, idempotence, mixed batches."""

from __future__ import annotations

import json

import pytest
from samples import FIELDS, record

from gpumetrics.state import app_state


def post(client, body):
    return client.post("/metrics", json=body)


def read_all(client, **params):
    return client.get("/metrics", query_string={"limit": 10000, **params}).get_json()["items"]


@pytest.mark.parametrize("metric", list(FIELDS))
def test_each_kind_is_stored_and_read_back_as_sent(client, metric):
    sent = record(metric, host="node-7", uuid="GPU-1234", name="NVIDIA A100")
    answer = post(client, sent)
    assert answer.status_code == 201
    assert answer.get_json() == {"stored": 1, "duplicates": 0, "rejected": [], "warnings": []}
    assert read_all(client) == [sent]


def test_optional_identity_is_omitted_when_not_given(client):
    post(client, record("power"))
    assert read_all(client) == [record("power")]


def test_unknown_fields_are_ignored(client):
    answer = post(client, record("temperature", fanSpeed=40, extra={"nested": True}))
    assert answer.status_code == 201
    assert read_all(client) == [record("temperature")]


def test_re_post_counts_duplicates_and_stores_nothing_twice(client):
    batch = [record(kind, seconds=1) for kind in FIELDS] + [record("process", seconds=1, pid=99)]
    assert post(client, batch).get_json() == {"stored": 7, "duplicates": 0, "rejected": [], "warnings": []}
    assert post(client, batch).get_json() == {"stored": 0, "duplicates": 7, "rejected": [], "warnings": []}
    assert len(read_all(client)) == 7


def test_duplicate_inside_one_batch_is_counted(client):
    answer = post(client, [record("power"), record("power", watts=1.0)])
    assert answer.get_json() == {"stored": 1, "duplicates": 1, "rejected": [], "warnings": []}


def test_same_time_on_another_host_or_gpu_is_not_a_duplicate(client):
    batch = [record("power"), record("power", gpu=1), record("power", host="b")]
    assert post(client, batch).get_json()["stored"] == 3


def test_mixed_batch_stores_the_valid_and_names_the_invalid(client):
    batch = [
        record("memory"),
        record("utilization", gpuPercent=101),
        record("power", seconds=1),
        {"metric": "clocks"},
        "not a record",
        record("process", pid=-1, usedMiB="12"),
    ]
    answer = post(client, batch)
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["stored"] == 2 and body["duplicates"] == 0
    errors = {item["index"]: item["errors"] for item in body["rejected"]}
    assert set(errors) == {1, 3, 4, 5}
    assert list(errors[1]) == ["gpuPercent"]
    assert set(errors[3]) == {"timestamp", "gpuIndex", "graphicsMHz", "memoryMHz"}
    assert "_schema" in errors[4]
    assert set(errors[5]) == {"pid", "usedMiB"}
    assert (body["code"], body["status"]) == (422, "Unprocessable Entity")
    assert body["message"] == "2 of 6 records stored; 4 rejected"
    assert body["errors"] == {str(index): messages for index, messages in errors.items()}
    assert [item["metric"] for item in read_all(client)] == ["memory", "power"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("usedMiB", "1234"),
        ("usedMiB", True),
        ("usedMiB", None),
        ("usedMiB", -1),
        ("usedMiB", [1]),
        ("gpuIndex", -1),
        ("gpuIndex", 1.5),
        ("gpuIndex", "0"),
        ("timestamp", "yesterday"),
        ("timestamp", 1764615090),
        ("timestamp", "2025-13-01T00:00:00Z"),
        ("host", "h" * 256),
        ("metric", "fan"),
        ("metric", ["memory"]),
        ("metric", {"kind": "memory"}),
        ("metric", None),
    ],
)
def test_bad_value_is_rejected_naming_its_field(client, field, value):
    sent = record("memory")
    sent[field] = value
    answer = post(client, sent)
    assert answer.status_code == 422
    assert answer.get_json()["stored"] == 0
    assert field in answer.get_json()["rejected"][0]["errors"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_rejected(client, literal):
    body = json.dumps(record("power", watts=0)).replace('"watts": 0', f'"watts": {literal}')
    answer = client.post("/metrics", data=body, content_type="application/json")
    assert answer.status_code == 422
    assert "watts" in answer.get_json()["rejected"][0]["errors"]


@pytest.mark.parametrize(
    "metric, field, value",
    [
        ("utilization", "gpuPercent", 100.5),
        ("utilization", "memoryPercent", -0.1),
        ("clocks", "memoryMHz", -5),
        ("power", "watts", -1),
    ],
)
def test_out_of_bounds_is_rejected(client, metric, field, value):
    answer = post(client, record(metric, **{field: value}))
    assert answer.status_code == 422
    assert field in answer.get_json()["rejected"][0]["errors"]


def test_missing_field_of_the_kind_is_rejected(client):
    sent = record("memory")
    del sent["freeMiB"]
    assert post(client, sent).get_json()["rejected"][0]["errors"] == {"freeMiB": ["Missing data for required field."]}


def test_malformed_json_is_400(client):
    answer = client.post("/metrics", data='{"timestamp": ', content_type="application/json")
    assert answer.status_code == 400
    assert "JSON" in answer.get_json()["message"]


@pytest.mark.parametrize("body", ["12", '"text"', "null"])
def test_json_that_is_no_record_is_400(client, body):
    assert client.post("/metrics", data=body, content_type="application/json").status_code == 400


def test_other_content_type_is_415(client):
    answer = client.post("/metrics", data=json.dumps(record()), content_type="text/plain")
    assert answer.status_code == 415


def test_too_many_records_is_413(app, settings):
    app_state(app).settings = settings.replace(max_batch=3)
    answer = app.test_client().post("/metrics", json=[record(seconds=i) for i in range(4)])
    assert answer.status_code == 413
    assert "MAX_BATCH" in answer.get_json()["message"]


def test_too_large_body_is_413(client, app):
    body = json.dumps([record(seconds=i) for i in range(5)])
    app.config["MAX_CONTENT_LENGTH"] = len(body) - 1
    answer = client.post("/metrics", data=body, content_type="application/json")
    assert answer.status_code == 413
    assert answer.is_json


@pytest.mark.parametrize(
    "sent, stored",
    [
        ("2025-12-01T18:00:00", "2025-12-01T18:00:00Z"),
        ("2025-12-01T18:00:00Z", "2025-12-01T18:00:00Z"),
        ("2025-12-01T20:30:00+02:30", "2025-12-01T18:00:00Z"),
        ("2025-12-01T13:00:00.000250-05:00", "2025-12-01T18:00:00.000250Z"),
        ("2025-12-01T18:00:00.123456+00:00", "2025-12-01T18:00:00.123456Z"),
    ],
)
def test_timestamps_are_converted_to_utc_with_microseconds(client, sent, stored):
    post(client, record(timestamp=sent))
    assert read_all(client)[0]["timestamp"] == stored


def test_offset_and_utc_spellings_of_one_instant_are_duplicates(client):
    post(client, record(timestamp="2025-12-01T18:00:00Z"))
    answer = post(client, record(timestamp="2025-12-01T19:00:00+01:00"))
    assert answer.get_json()["duplicates"] == 1
