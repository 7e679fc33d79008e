"""The crawler's own records, and fleet identity: host, index and UUID of every GPU."""

from __future__ import annotations

import json

import pytest
from samples import record

from gpumetrics.jobs.tail import Tailer
from gpumetrics.state import app_state

GPU_LINE = '{"timestamp":"2025-12-01T18:51:30Z","hostname":"trainer-01","gpuId":"GPU-abc-uuid","gpuName":"NVIDIA A100-PCIE-40GB","metricType":"gpu","totalMemoryMiB":40960,"usedTotalMemoryMiB":1234,"freeMemoryMiB":39726,"gpuUtilPercent":72,"memUtilPercent":35,"temperatureCelsius":62,"powerMilliwatts":165000}'  # noqa: E501
PROCESS_LINE = '{"timestamp":"2025-12-01T18:51:30Z","hostname":"trainer-01","gpuId":"GPU-abc-uuid","gpuName":"NVIDIA A100-PCIE-40GB","metricType":"process","pid":1234,"processName":"python","processUsedMemoryMiB":2048,"appName":"trainer","kernelName":"vectorAdd,reduceSum","tag":"epoch1","scopeMemDeltaMiB":256}'  # noqa: E501
IDENTITY = {"timestamp": "2025-12-01T18:51:30Z", "gpuIndex": None, "host": "trainer-01", "uuid": "GPU-abc-uuid"}
IDENTITY["name"] = "NVIDIA A100-PCIE-40GB"
EXPECTED = [
    {**IDENTITY, "metric": "memory", "totalMiB": 40960, "usedMiB": 1234, "freeMiB": 39726},
    {**IDENTITY, "metric": "utilization", "gpuPercent": 72, "memoryPercent": 35},
    {**IDENTITY, "metric": "temperature", "celsius": 62},
    {**IDENTITY, "metric": "power", "watts": 165},
    {**IDENTITY, "metric": "process", "pid": 1234, "usedMiB": 2048, "processName": "python", "appName": "trainer"}
    | {"kernelName": "vectorAdd,reduceSum", "tag": "epoch1", "scopeMemDeltaMiB": 256},
]


def items(client, **params):
    return client.get("/metrics", query_string={"limit": 10000, **params}).get_json()["items"]


def post(client, body):
    return client.post("/metrics", json=body)


def test_the_two_crawler_lines_over_http(client):
    answer = client.post("/metrics", data=f"[{GPU_LINE},{PROCESS_LINE}]", content_type="application/json")
    assert answer.status_code == 201
    assert answer.get_json() == {"stored": 5, "duplicates": 0, "rejected": [], "warnings": []}
    assert items(client) == EXPECTED
    assert post(client, json.loads(GPU_LINE)).get_json() == {
        "stored": 0,
        "duplicates": 4,
        "rejected": [],
        "warnings": [],
    }


def test_the_two_crawler_lines_through_a_jsonl_file(app, client, tmp_path):
    path = tmp_path / "msg_out.jsonl"
    path.write_text(GPU_LINE + "\n" + PROCESS_LINE + "\n")
    assert Tailer(app_state(app).db, path, "trainer-01").poll() == 2
    assert items(client) == EXPECTED


def test_a_mixed_batch_of_both_formats(client):
    seed = record("power", host="trainer-01", gpu=1)
    answer = post(client, [json.loads(GPU_LINE), seed, json.loads(PROCESS_LINE)])
    assert answer.get_json() == {"stored": 6, "duplicates": 0, "rejected": [], "warnings": []}
    assert len(client.get("/gpus").get_json()["gpus"]) == 2


def test_milliwatts_become_watts(client):
    post(client, {**json.loads(GPU_LINE), "powerMilliwatts": 12345})
    assert items(client, metric="power")[0]["watts"] == 12.345


def test_clocks_when_present_keep_the_sm_clock(client):
    post(client, {**json.loads(GPU_LINE), "graphicsClockMHz": 1410, "smClockMHz": 1400, "memClockMHz": 1215})
    [clocks] = items(client, metric="clocks")
    assert (clocks["graphicsMHz"], clocks["smMHz"], clocks["memoryMHz"]) == (1410, 1400, 1215)


def test_unknown_fields_are_ignored(client):
    answer = post(client, {**json.loads(PROCESS_LINE), "cudaVersion": "12.4", "extra": [1, 2]})
    assert answer.status_code == 201


@pytest.mark.parametrize(
    "line, change, field",
    [
        (GPU_LINE, {"gpuUtilPercent": 101}, "gpuUtilPercent"),
        (GPU_LINE, {"powerMilliwatts": -1}, "powerMilliwatts"),
        (GPU_LINE, {"freeMemoryMiB": "39726"}, "freeMemoryMiB"),
        (GPU_LINE, {"usedTotalMemoryMiB": None}, "usedTotalMemoryMiB"),
        (GPU_LINE, {"hostname": "h" * 256}, "hostname"),
        (GPU_LINE, {"metricType": "fan"}, "metricType"),
        (GPU_LINE, {"gpuId": "unknown"}, "gpuId"),
        (PROCESS_LINE, {"pid": -3}, "pid"),
        (PROCESS_LINE, {"processUsedMemoryMiB": True}, "processUsedMemoryMiB"),
        (PROCESS_LINE, {"timestamp": "soon"}, "timestamp"),
    ],
)
def test_a_bad_crawler_field_is_rejected_under_its_own_name(client, line, change, field):
    answer = post(client, [{**json.loads(line), **change}, record("power")])
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["stored"] == 1, "the valid record beside it is stored"
    assert body["rejected"][0]["index"] == 0 and field in body["rejected"][0]["errors"]


def test_a_missing_crawler_field_is_named(client):
    sent = json.loads(PROCESS_LINE)
    del sent["processUsedMemoryMiB"]
    errors = post(client, sent).get_json()["rejected"][0]["errors"]
    assert errors == {"processUsedMemoryMiB": ["Missing data for required field."]}


def test_two_hosts_with_a_gpu_0_are_two_gpus(client):
    post(client, [record("power", host="a"), record("power", host="b"), record("power", host="a", seconds=1)])
    gpus = client.get("/gpus").get_json()["gpus"]
    assert [(g["host"], g["gpuIndex"]) for g in gpus] == [("a", 0), ("b", 0)]
    assert len(items(client, host="a")) == 2 and len(items(client, host="b")) == 1


def test_a_gpu_seen_by_index_then_with_its_uuid_is_one_gpu(client):
    post(client, record("power", host="h", gpu=2))
    post(client, record("power", seconds=1, host="h", gpu=2, uuid="GPU-x", name="H100"))
    [gpu] = client.get("/gpus").get_json()["gpus"]
    assert (gpu["host"], gpu["gpuIndex"], gpu["uuid"], gpu["name"]) == ("h", 2, "GPU-x", "H100")
    assert gpu["firstSeen"] == "2025-12-01T18:00:00Z" and gpu["lastSeen"] == "2025-12-01T18:00:01Z"


def test_a_gpu_seen_by_uuid_then_by_index_and_uuid_is_one_gpu(client):
    post(client, json.loads(GPU_LINE))  # UUID only
    post(client, record("power", host="trainer-01", gpu=0))  # index only: another GPU, as far as we know
    assert len(client.get("/gpus").get_json()["gpus"]) == 2
    post(client, record("temperature", seconds=5, host="trainer-01", gpu=0, uuid="GPU-abc-uuid"))  # ties them
    [gpu] = client.get("/gpus").get_json()["gpus"]
    assert (gpu["gpuIndex"], gpu["uuid"], gpu["name"]) == (0, "GPU-abc-uuid", "NVIDIA A100-PCIE-40GB")
    assert len(items(client, uuid="GPU-abc-uuid")) == 6
    assert {r["gpuIndex"] for r in items(client)} == {0}
    post(client, json.loads(GPU_LINE))  # the crawler again, by UUID: now the same GPU, and duplicates
    assert len(client.get("/gpus").get_json()["gpus"]) == 1
    assert len(items(client)) == 6


def test_unknown_uuid_never_merges_gpus(client):
    first = {**json.loads(GPU_LINE), "gpuId": "unknown", "gpuIndex": 0}
    second = {**json.loads(GPU_LINE), "gpuId": "unknown", "gpuIndex": 1}
    assert post(client, [first, second]).get_json()["stored"] == 8
    gpus = client.get("/gpus").get_json()["gpus"]
    assert [(g["gpuIndex"], g["uuid"]) for g in gpus] == [(0, None), (1, None)]


def test_filters_and_aggregates_by_uuid(client):
    post(client, [json.loads(GPU_LINE), {**json.loads(GPU_LINE), "gpuId": "GPU-other", "gpuUtilPercent": 10}])
    assert [r["uuid"] for r in items(client, uuid="GPU-other")] == ["GPU-other"] * 4
    answer = client.get(
        "/metrics/aggregate", query_string={"aggregate": "avg", "field": "gpuPercent", "uuid": "GPU-other"}
    )
    assert answer.get_json()["value"] == 10
    stats = client.get("/stats", query_string={"uuid": "GPU-abc-uuid"}).get_json()["gpus"]
    assert [g["uuid"] for g in stats] == ["GPU-abc-uuid"]
    assert stats[0]["metrics"]["power"]["fields"]["watts"]["avg"] == 165


def test_openapi_describes_the_crawler_format_with_its_examples(client):
    spec = client.get("/openapi.json").get_json()
    gpu = spec["components"]["schemas"]["CrawlerGpuRecord"]["properties"]
    assert "mW" in gpu["powerMilliwatts"]["description"] and gpu["gpuUtilPercent"]["maximum"] == 100
    examples = spec["paths"]["/metrics"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["crawlerGpu"]["value"] == json.loads(GPU_LINE)
    assert examples["crawlerProcess"]["value"] == json.loads(PROCESS_LINE)
