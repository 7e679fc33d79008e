"""gpumon_client's events, as the crawler forwards them (tests/data/gpumon_events.ndjson):
every type, both device-snapshot shapes, re-sends, a reboot, an unmatched scope, GPU
samples that become metrics, and the spans, summary and processes read back."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy
import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from gpumetrics.db.tables import scope_samples
from gpumetrics.state import app_state
from gpumetrics.store import clocks

LINES = (Path(__file__).parent.parent / "data" / "gpumon_events.ndjson").read_text().splitlines()
UPTIME = 259_200_000_000_000  # the sample host had been up three days
EVENTS = [json.loads(line) for line in LINES]


def post_lines(client, lines, **headers):
    """One POST a line, as the crawler does."""
    answers = [client.post("/metrics", data=line, content_type="application/json", headers=headers) for line in lines]
    assert [a.status_code for a in answers] == [201] * len(lines), [a.get_json() for a in answers]
    return [a.get_json() for a in answers]


def spans(client, **params):
    answer = client.get("/spans", query_string=MultiDict(params.items()))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


def test_every_type_as_the_crawler_forwards_it(client):
    answers = post_lines(client, LINES)
    assert [a["stored"] for a in answers] == [1] * len(LINES)
    found = spans(client)
    assert [(s["type"], s["name"]) for s in found] == [
        ("scope", "epoch"),
        ("kernel", "ampere_sgemm_128x64_nn"),
        ("kernel", "ampere_sgemm_128x64_nn"),
        ("kernel", "void reduce_kernel<float>(float const*, float*, int)"),
        ("scope", "eval"),
    ]
    epoch, first_kernel, _, failed, evaluation = found
    assert (epoch["state"], epoch["durationNs"], epoch["tag"]) == ("closed", 600_000_000, "e1")
    assert epoch["memoryBegin"] == [{"device": 0, "used_mib": 1024, "free_mib": 39936, "total_mib": 40960}]
    assert epoch["memoryEnd"] == [{"device": 0, "used_mib": 1536, "free_mib": 39424, "total_mib": 40960}]
    assert (first_kernel["grid"], first_kernel["block"], first_kernel["sharedMemBytes"]) == (
        [128, 1, 1],
        [256, 1, 1],
        0,
    )
    assert failed["cudaError"] == "cudaErrorLaunchOutOfResources" and failed["tag"] is None
    assert (evaluation["state"], evaluation["endNs"]) == ("abandoned", UPTIME + 1_900_000_000), "shutdown abandons it"
    assert all((s["host"], s["pid"], s["app"]) == ("trainer-01", 4242, "train") for s in found)
    (process,) = client.get("/processes").get_json()["processes"]
    assert (process["host"], process["pid"], process["app"], process["shutDown"], process["spans"]) == (
        "trainer-01", 4242, "train", True, 5,
    )  # fmt: skip


def test_a_scope_sample_keeps_its_memory_per_device(client):
    """The library's `devices` shape is kept in the schema's `memory` shape, per device."""
    post_lines(client, LINES)
    with app_state(client.application).db.reading() as conn:
        rows = conn.execute(select(scope_samples.c.name, scope_samples.c.tag, scope_samples.c.memory)).all()
    assert [(name, tag, json.loads(memory)) for name, tag, memory in rows] == [
        ("epoch", "e1", [{"device": 0, "used_mib": 2048, "free_mib": 38912, "total_mib": 40960}])
    ]


def test_times_map_to_utc_in_order_with_the_raw_nanoseconds_kept(client):
    before = time.time()
    post_lines(client, LINES)
    after = time.time()
    found = spans(client)
    for span in found:
        start = datetime.fromisoformat(span["start"].replace("Z", "+00:00")).timestamp()
        assert before - 2 <= start <= after + 1, span
    starts = [s["start"] for s in found]
    assert starts == sorted(starts)
    kernel = found[1]
    width = datetime.fromisoformat(kernel["end"][:-1]) - datetime.fromisoformat(kernel["start"][:-1])
    assert width.total_seconds() * 1e9 == pytest.approx(kernel["durationNs"], abs=1000)
    assert (kernel["startNs"], kernel["endNs"]) == (UPTIME + 1_200_000_000, UPTIME + 1_200_250_000)


def test_gpu_samples_become_the_records_a_crawler_gpu_record_makes(client):
    post_lines(client, LINES)
    gpus = client.get("/gpus").get_json()["gpus"]
    assert [(g["host"], g["gpuIndex"], g["uuid"], g["name"]) for g in gpus] == [
        ("trainer-01", 0, "GPU-5f1c2a3b-0000-4000-8000-000000000000", "NVIDIA A100-PCIE-40GB"),
        ("trainer-01", 1, "GPU-5f1c2a3b-0000-4000-8000-000000000001", "NVIDIA A100-PCIE-40GB"),
    ]
    latest = client.get("/metrics/latest", query_string={"gpuIndex": 0}).get_json()["items"]
    values = {item["metric"]: {k: v for k, v in item.items() if k not in ("timestamp", "name")} for item in latest}
    identity = {"gpuIndex": 0, "host": "trainer-01", "uuid": "GPU-5f1c2a3b-0000-4000-8000-000000000000"}
    assert values == {
        "memory": {**identity, "metric": "memory", "totalMiB": 40960, "usedMiB": 2048, "freeMiB": 38912},
        "utilization": {**identity, "metric": "utilization", "gpuPercent": 87, "memoryPercent": 41},
        "temperature": {**identity, "metric": "temperature", "celsius": 63},
        "power": {**identity, "metric": "power", "watts": 182},
        "clocks": {**identity, "metric": "clocks", "graphicsMHz": 1410, "memoryMHz": 1215, "smMHz": 1410},
    }
    stats = client.get("/stats", query_string={"gpuIndex": 1}).get_json()["gpus"][0]["metrics"]
    assert stats["power"]["fields"]["watts"]["last"] == 61


def test_a_re_sent_event_is_a_duplicate(client):
    post_lines(client, LINES)
    again = post_lines(client, LINES)
    assert [(a["stored"], a["duplicates"]) for a in again] == [(0, 1)] * len(LINES)
    batch = client.post("/metrics", json=EVENTS).get_json()
    assert (batch["stored"], batch["duplicates"]) == (0, len(EVENTS))
    assert len(spans(client)) == 5
    assert client.get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()["count"] == 10


def test_events_mix_with_both_record_formats_in_one_batch(client):
    from samples import iso, record

    from gpumetrics.records import crawler

    now = iso(datetime.now().astimezone())
    gpu = {**crawler.GPU_EXAMPLE, "timestamp": now}
    body = [EVENTS[2], record("power", timestamp=now), gpu, EVENTS[4]]
    answer = client.post("/metrics", json=body).get_json()
    assert (answer["stored"], answer["duplicates"], answer["rejected"]) == (2 + 1 + 4, 0, [])


@pytest.mark.parametrize(
    "change, field",
    [
        ({"ts_end_ns": 1}, "ts_end_ns"),
        ({"grid": [1, 2]}, "grid"),
        ({"duration_ns": -5}, "duration_ns"),
        ({"pid": "4242"}, "pid"),
        ({"cuda_error": None}, "cuda_error"),
        ({"type": "kernal"}, "type"),
    ],
)
def test_a_bad_event_is_rejected_naming_its_own_field(client, change, field):
    answer = client.post("/metrics", json=[{**EVENTS[2], **change}, EVENTS[3]])
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["stored"] == 1 and field in body["rejected"][0]["errors"], body


def test_a_scope_whose_end_never_came_stays_open(client):
    post_lines(client, LINES[:2])
    (scope,) = spans(client)
    assert (scope["state"], scope["end"], scope["durationNs"]) == ("open", None, None)


def test_a_reboot_starts_a_new_estimate():
    first = clocks.observe(None, "h", 3_600_000_000_000, received_ns=10_000_000_000_000)  # up an hour
    assert first.boot == 1 and first.offset_ns == 10_000_000_000_000 - 3_600_000_000_000
    late = clocks.observe(first, "h", 3_500_000_000_000, received_ns=10_000_200_000_000)  # late, same boot
    assert late.boot == 1 and late.offset_ns == first.offset_ns
    better = clocks.observe(late, "h", 3_600_100_000_000, received_ns=10_000_099_999_999)
    assert better.offset_ns == 10_000_099_999_999 - 3_600_100_000_000, "a faster delivery lowers the estimate"
    rebooted = clocks.observe(better, "h", 5_000_000_000, received_ns=10_060_000_000_000)  # up 5 s, a minute later
    assert (rebooted.boot, rebooted.offset_ns) == (2, 10_055_000_000_000)


def test_a_reboot_over_http_keeps_both_boots_apart(client):
    uptime = [json.loads(line) for line in LINES]
    for event in uptime:  # the first boot: up about 100 s
        for name in ("ts_ns", "ts_start_ns", "ts_end_ns"):
            if name in event:
                event[name] += 100_000_000_000
    assert client.post("/metrics", json=uptime).status_code == 201
    time.sleep(1.0)
    rebooted = [json.loads(line) for line in LINES[:3]]
    for event in rebooted:  # up a few hundred milliseconds, after a second: booted since the last event
        for name in ("ts_ns", "ts_start_ns", "ts_end_ns"):
            if name in event:
                event[name] -= UPTIME + 990_000_000
    post_lines(client, [json.dumps(event) for event in rebooted])
    found = client.get("/processes").get_json()["processes"]
    assert [(p["pid"], p["shutDown"], p["spans"]) for p in found] == [(4242, True, 5), (4242, False, 2)]
    starts = [s["start"] for s in spans(client)]
    assert starts == sorted(starts) and len(starts) == 7


def random_kernels(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    names = ["gemm", "reduce", "softmax", "copy"]
    out, ts = [], 1_000_000_000
    for n in range(count):
        duration = rng.randint(1_000, 2_000_000)
        error = "cudaSuccess" if rng.random() > 0.05 else "cudaErrorIllegalAddress"
        host = rng.choice(["a", "b"])
        name = rng.choice(names)
        out.append(
            {
                "hostname": host,
                "type": "kernel",
                "pid": rng.choice([10, 11]),
                "app": "bench",
                "kernel": name,
                "ts_start_ns": ts,
                "ts_end_ns": ts + duration,
                "duration_ns": duration,
                "grid": [1, 1, 1],
                "block": [32, 1, 1],
                "shared_mem_bytes": 0,
                "cuda_error": error,
                "tag": f"t{n % 3}",
            }
        )
        ts += duration + rng.randint(0, 10_000)
    return out


def expected_summary(kernels: list[dict]) -> list[dict]:
    by_name: dict[str, list[dict]] = {}
    for kernel in kernels:
        by_name.setdefault(kernel["kernel"], []).append(kernel)
    grand = sum(k["duration_ns"] for k in kernels)
    out = []
    for name, group in by_name.items():
        durations = numpy.array([k["duration_ns"] for k in group], dtype=numpy.float64)
        out.append(
            {
                "name": name,
                "timePercent": 100 * durations.sum() / grand,
                "totalNs": int(durations.sum()),
                "instances": len(group),
                "avgNs": float(numpy.mean(durations)),
                "medianNs": float(numpy.median(durations)),
                "minNs": int(durations.min()),
                "maxNs": int(durations.max()),
                "stddevNs": float(numpy.std(durations)),
                "failed": sum(k["cuda_error"] != "cudaSuccess" for k in group),
            }
        )
    return sorted(out, key=lambda item: -item["totalNs"])


def assert_summary(answer: list[dict], kernels: list[dict]) -> None:
    """The answer of /spans/summary is numpy's summary of `kernels`, name by name, in order."""
    want = expected_summary(kernels)
    assert [item["name"] for item in answer] == [item["name"] for item in want]
    for got, expected in zip(answer, want, strict=True):
        for key, value in expected.items():
            assert got[key] == (value if key == "name" else pytest.approx(value, rel=1e-9)), (key, got, expected)


@pytest.mark.parametrize(
    "filters", [{}, {"host": "a"}, {"host": "b", "pid": 10}, {"pid": 11, "tag": "t1"}, {"cudaError": "failed"}]
)
def test_the_kernel_summary_equals_numpy(client, filters):
    kernels = random_kernels(seed=9, count=3000)
    for start in range(0, len(kernels), 1000):
        assert client.post("/metrics", json=kernels[start : start + 1000]).status_code == 201
    chosen = [
        k
        for k in kernels
        if k["hostname"] == filters.get("host", k["hostname"])
        and k["pid"] == filters.get("pid", k["pid"])
        and k["tag"] == filters.get("tag", k["tag"])
        and (k["cuda_error"] != "cudaSuccess" or "cudaError" not in filters)
    ]
    assert_summary(client.get("/spans/summary", query_string=filters).get_json()["items"], chosen)


def test_hosts_posting_at_once_add_up_in_the_summary(app):
    """Two hosts POST the same kernel names at the same time (on PostgreSQL their writes run
    concurrently): every batch is stored, none deadlocks, and the names' rows add up."""
    kernels = random_kernels(seed=11, count=4000)
    by_host = {host: [k for k in kernels if k["hostname"] == host] for host in ("a", "b")}
    answers: list[int] = []

    def post(host: str) -> None:
        client = app.test_client()
        mine = by_host[host]
        answers.extend(client.post("/metrics", json=mine[i : i + 50]).status_code for i in range(0, len(mine), 50))

    threads = [threading.Thread(target=post, args=(host,)) for host in by_host]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(answers) == {201}, answers
    assert_summary(app.test_client().get("/spans/summary").get_json()["items"], kernels)


def test_a_filtered_summary_keeps_to_its_type_and_name(client):
    """The filtered summary asks span_names for the type and name (a name_key implies both)."""
    post_lines(client, LINES)

    def summed(**filters):
        answer = client.get("/spans/summary", query_string={"host": "trainer-01", **filters}).get_json()["items"]
        return [(item["name"], item["instances"], item["failed"]) for item in answer]

    assert summed(type="scope") == [("epoch", 1, 0)], "the abandoned scope has no duration"
    assert summed() == [
        ("ampere_sgemm_128x64_nn", 2, 0),
        ("void reduce_kernel<float>(float const*, float*, int)", 1, 1),
    ]
    assert summed(name="ampere_sgemm_128x64_nn", pid=4242) == [("ampere_sgemm_128x64_nn", 2, 0)]
    assert summed(type="scope", name="ampere_sgemm_128x64_nn") == []


def test_span_filters_and_pages(client):
    kernels = random_kernels(seed=4, count=500)
    assert client.post("/metrics", json=kernels).status_code == 201
    failed = spans(client, cudaError="failed", limit=1000)
    assert len(failed) == sum(k["cuda_error"] != "cudaSuccess" for k in kernels) and failed
    on_a = spans(client, host="a", pid=10, name="gemm", limit=1000)
    assert len(on_a) == sum((k["hostname"], k["pid"], k["kernel"]) == ("a", 10, "gemm") for k in kernels)
    every, cursor = [], None
    while True:
        page = client.get("/spans", query_string={"limit": 77, **({"cursor": cursor} if cursor else {})}).get_json()
        every += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(every) == 500 and len({(s["host"], s["startNs"]) for s in every}) == 500
    middle = every[250]
    window = spans(client, start=middle["start"], end=middle["start"], limit=1000)
    assert middle in window and all(s["start"] <= middle["start"] <= (s["end"] or "~") for s in window)
    tagged = spans(client, tag="t1", app="bench", type="kernel", limit=1000)
    assert len(tagged) == sum(k["tag"] == "t1" for k in kernels) and {s["tag"] for s in tagged} == {"t1"}
    assert spans(client, app="another") == [] and spans(client, type="scope") == []
    assert client.get("/spans", query_string={"type": "warp"}).status_code == 422
    assert client.get("/spans", query_string={"cursor": "nope"}).status_code == 422


def test_events_are_tailed_and_imported_like_records(app, tmp_path, settings):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    from gpumetrics.jobs.tail import Tailer
    from gpumetrics.state import app_state

    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(LINES) + "\n")
    assert Tailer(app_state(app).db, path, "host-a").poll() == len(LINES)
    client = app.test_client()
    assert len(spans(client)) == 5
    env = {**os.environ, "DATABASE_URL": settings.database_url, "METRICS_RETENTION_HOURS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "gpumetrics", "import", str(path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"{path}: {len(LINES)} lines, 0 stored, {len(LINES)} duplicates, 0 rejected" in done.stdout
