"""GET /gpus and GET /stats, checked against values computed from the same inputs."""

from __future__ import annotations

import random
import statistics

import pytest
from samples import FIELDS, record


@pytest.fixture
def sent(client):
    rng = random.Random(11)
    out = []
    for gpu in (0, 1):
        for second in range(0, 120, 3):
            out.append(
                record("power", second, gpu, host="h1", uuid=f"GPU-{gpu}", name="A100", watts=rng.uniform(50, 300))
            )
            out.append(record("temperature", second, gpu, host="h1", celsius=rng.randint(30, 90)))
            out.append(
                record("process", second, gpu, host="h1", pid=rng.choice([10, 20]), usedMiB=rng.randint(0, 4096))
            )
    out.append(record("memory", 5, 3))  # a GPU of the local host
    assert client.post("/metrics", json=out).status_code == 201
    return out


def test_gpus_lists_every_gpu_with_its_time_range(client, sent):
    assert client.get("/gpus").get_json() == {
        "gpus": [
            {
                "host": None,
                "gpuIndex": 3,
                "uuid": None,
                "name": None,
                "firstSeen": "2025-12-01T18:00:05Z",
                "lastSeen": "2025-12-01T18:00:05Z",
            },
            {
                "host": "h1",
                "gpuIndex": 0,
                "uuid": "GPU-0",
                "name": "A100",
                "firstSeen": "2025-12-01T18:00:00Z",
                "lastSeen": "2025-12-01T18:01:57Z",
            },
            {
                "host": "h1",
                "gpuIndex": 1,
                "uuid": "GPU-1",
                "name": "A100",
                "firstSeen": "2025-12-01T18:00:00Z",
                "lastSeen": "2025-12-01T18:01:57Z",
            },
        ]
    }


def test_gpus_is_empty_without_records(client):
    assert client.get("/gpus").get_json() == {"gpus": []}


def expected_stats(rows, kind):
    rows = sorted((r for r in rows if r["metric"] == kind), key=lambda r: r["timestamp"])
    out = {"count": len(rows), "first": rows[0]["timestamp"], "last": rows[-1]["timestamp"], "fields": {}}
    for name in FIELDS[kind]:
        if name == "pid":
            continue
        values = [r[name] for r in rows]
        out["fields"][name] = {
            "min": min(values),
            "max": max(values),
            "avg": statistics.fmean(values),
            "last": values[-1],
        }
    return out


def test_stats_equal_an_independent_computation(client, sent):
    window = {"start": "2025-12-01T18:00:30Z", "end": "2025-12-01T18:01:30Z", "host": "h1", "gpuIndex": 1}
    answer = client.get("/stats", query_string=window).get_json()
    rows = [
        r
        for r in sent
        if r.get("host") == "h1" and r["gpuIndex"] == 1 and "18:00:30" <= r["timestamp"][11:19] <= "18:01:30"
    ]
    [gpu] = answer["gpus"]
    assert (gpu["host"], gpu["gpuIndex"], gpu["uuid"], gpu["name"]) == ("h1", 1, "GPU-1", "A100")
    assert set(gpu["metrics"]) == {"power", "temperature", "process"}
    for kind in ("power", "temperature"):
        got, want = gpu["metrics"][kind], expected_stats(rows, kind)
        for name, field in want.pop("fields").items():
            assert got["fields"][name] == pytest.approx(field, rel=1e-12)
        got.pop("fields")
        assert got == want
    assert gpu["metrics"]["process"]["count"] == 21


def test_stats_of_every_gpu_and_an_empty_window(client, sent):
    assert [(g["host"], g["gpuIndex"]) for g in client.get("/stats").get_json()["gpus"]] == [
        (None, 3),
        ("h1", 0),
        ("h1", 1),
    ]
    assert client.get("/stats", query_string={"start": "2030-01-01"}).get_json() == {"gpus": []}


def test_stats_bad_parameter_is_422(client):
    answer = client.get("/stats", query_string={"gpuIndex": "zero"})
    assert answer.status_code == 422 and "gpuIndex" in answer.get_json()["errors"]["query"]
