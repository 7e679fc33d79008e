"""GET /metrics/series against numpy on random data: every aggregate, every groupBy,
several steps, windows that cut minutes, late and duplicate records, expired records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy
import pytest
from samples import iso
from werkzeug.datastructures import MultiDict

from gpumetrics.jobs import retention
from gpumetrics.state import app_state

AGGREGATES = ["avg", "min", "max", "sum", "count", "last", "p50", "p90", "p95", "p99"]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
SPAN_SEC = 3 * 3600


def fleet_records(seed: int) -> list[dict]:
    """Two hosts, two GPUs each, utilization at random times; values in quarters, so sums are exact."""
    rng = random.Random(seed)
    out = []
    for host in ("a", "b"):
        for gpu in (0, 1):
            for second in sorted(rng.sample(range(SPAN_SEC), 900)):
                when = T0 + timedelta(seconds=second, microseconds=rng.choice([0, 250_000, 999_999]))
                value = rng.randint(0, 400) / 4
                out.append(
                    {
                        "timestamp": iso(when),
                        "gpuIndex": gpu,
                        "host": host,
                        "uuid": f"GPU-{host}{gpu}",
                        "metric": "utilization",
                        "gpuPercent": value,
                        "memoryPercent": rng.randint(0, 100),
                    }
                )
    return out


def send_shuffled_with_duplicates(client, records: list[dict], seed: int) -> None:
    """Out of order, in uneven batches, with a fifth of them sent twice."""
    rng = random.Random(seed)
    shuffled = records + rng.sample(records, len(records) // 5)
    rng.shuffle(shuffled)
    while shuffled:
        size = rng.randint(1, 700)
        batch, shuffled = shuffled[:size], shuffled[size:]
        assert client.post("/metrics", json=batch).status_code == 201


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def expected(records, field, aggregate, step, start, end, group_by) -> dict:
    """numpy's answer: {group labels: [[bucket, value], ...]} over records in [start, end]."""
    groups: dict = {}
    for record in records:
        t = epoch(record["timestamp"])
        if not start <= t <= end:
            continue
        key = {"gpu": (record["host"], record["gpuIndex"]), "host": (record["host"],), "none": ()}[group_by]
        bucket = (int(t * 1_000_000) // (step * 1_000_000)) * step
        groups.setdefault(key, {}).setdefault(bucket, []).append((t, record[field]))
    out = {}
    for key, buckets in groups.items():
        points = []
        for bucket in sorted(buckets):
            rows = buckets[bucket]
            values = numpy.array([value for _, value in rows])
            if aggregate.startswith("p"):
                value = float(numpy.percentile(values, float(aggregate[1:])))
            elif aggregate == "last":
                newest = max(t for t, _ in rows)
                value = max(v for t, v in rows if t == newest)
            else:
                value = {"avg": numpy.mean, "min": numpy.min, "max": numpy.max, "sum": numpy.sum, "count": len}[
                    aggregate
                ](values)
            points.append([datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), float(value)])
        out[key] = points
    return out


def answered(client, **params) -> dict:
    response = client.get("/metrics/series", query_string=params)
    assert response.status_code == 200, response.get_json()
    out = {}
    for series in response.get_json()["series"]:
        key = {"gpu": (series.get("host"), series.get("gpuIndex")), "host": (series.get("host"),), "none": ()}[
            params.get("groupBy", "gpu")
        ]
        out[key] = [[when, float(value)] for when, value in series["points"]]
    return out


@pytest.fixture
def fleet(client):
    records = fleet_records(seed=12)
    send_shuffled_with_duplicates(client, records, seed=13)
    return records


WINDOWS = [(0, SPAN_SEC), (17.3, 2 * 3600 + 41.9), (3599.5, 3 * 3600 - 0.25)]
STEPS = {"1m": 60, "5m": 300, "90": 90, "1h": 3600}


@pytest.mark.parametrize("group_by", ["gpu", "host", "none"])
@pytest.mark.parametrize("step", list(STEPS))
def test_every_aggregate_equals_numpy(client, fleet, group_by, step):
    base = T0.timestamp()
    for first, last in WINDOWS:
        start, end = base + first, base + last
        window = {
            "start": datetime.fromtimestamp(start, UTC).isoformat(),
            "end": datetime.fromtimestamp(end, UTC).isoformat(),
        }
        for aggregate in AGGREGATES:
            params = {"metric": "utilization", "field": "gpuPercent", "aggregate": aggregate, "step": step}
            got = answered(client, **params, **window, groupBy=group_by)
            want = expected(fleet, "gpuPercent", aggregate, STEPS[step], start, end, group_by)
            assert got.keys() == want.keys(), (aggregate, step, group_by)
            for key in want:
                assert [when for when, _ in got[key]] == [when for when, _ in want[key]], (aggregate, step, key)
                values = [value for _, value in got[key]], [value for _, value in want[key]]
                if aggregate.startswith("p"):
                    assert values[0] == pytest.approx(values[1], rel=1e-12), (aggregate, step, key)
                else:
                    assert values[0] == values[1], (aggregate, step, key, first, last)


def test_after_the_records_expire_minute_steps_answer_as_before(make_app):
    app = make_app(metrics_retention_hours=1.0, rollup_retention_days=30.0)
    client = app.test_client()
    records = [r for r in fleet_records(seed=5) if epoch(r["timestamp"]) < T0.timestamp() + 3600]
    send_shuffled_with_duplicates(client, records, seed=6)
    first_minute = T0.replace(second=0) + timedelta(minutes=1)  # whole minutes: their records are gone
    window = {"start": iso(first_minute), "end": iso(first_minute + timedelta(minutes=50, microseconds=-1))}
    kept = ["avg", "min", "max", "sum", "count", "last"]
    before = {
        (a, step, g): answered(
            client, metric="utilization", field="gpuPercent", aggregate=a, step=step, groupBy=g, **window
        )
        for a in kept
        for step in ("1m", "5m", "1h")
        for g in ("gpu", "host", "none")
    }
    assert retention.purge(app_state(app).db, retention_hours=1, rollup_days=30, pause=0) == len(records)
    assert client.get("/metrics").get_json()["items"] == []
    for (aggregate, step, group_by), answer in before.items():
        again = answered(
            client, metric="utilization", field="gpuPercent", aggregate=aggregate, step=step, groupBy=group_by, **window
        )
        assert again == answer, (aggregate, step, group_by)
    percentile = client.get(
        "/metrics/series",
        query_string={"metric": "utilization", "field": "gpuPercent", "aggregate": "p90", "step": "1m", **window},
    )
    assert percentile.status_code == 422
    assert "Percentiles need the records" in percentile.get_json()["errors"]["query"]["aggregate"][0]


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"step": "1s", "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T04:00:00Z"}, "step"),
        ({"step": "0"}, "step"),
        ({"step": "-5"}, "step"),
        ({"step": "soon"}, "step"),
        ({"step": "1m", "field": "watts"}, "field"),
        ({"step": "1m", "aggregate": "median"}, "aggregate"),
        ({"step": "1m", "groupBy": "rack"}, "groupBy"),
        ({"step": "1m", "start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "start"),
        ({"field": "gpuPercent"}, "step"),
        ({"step": "1m", "field": None}, "field"),
        ({"step": "1m", "metric": "fan"}, "metric"),
    ],
)
def test_mistakes_are_422_naming_the_parameter(client, params, parameter):
    query = {"metric": "utilization", "field": "gpuPercent", **params}
    query = {name: value for name, value in query.items() if value is not None}
    answer = client.get("/metrics/series", query_string=query)
    assert answer.status_code == 422, answer.get_json()
    assert parameter in answer.get_json()["errors"]["query"]


def test_eleven_thousand_buckets_pass_and_one_more_does_not(client):
    window = {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T03:03:20Z"}  # 11000 seconds
    ok = client.get("/metrics/series", query_string={"metric": "power", "field": "watts", "step": "1", **window})
    assert ok.status_code == 200
    window["end"] = "2025-01-01T03:03:21Z"
    over = client.get("/metrics/series", query_string={"metric": "power", "field": "watts", "step": "1", **window})
    assert over.status_code == 422 and "11000" in over.get_json()["errors"]["query"]["step"][0]


def test_count_needs_no_field_and_filters_repeat(client, fleet):
    window = {"start": iso(T0), "end": iso(T0 + timedelta(seconds=SPAN_SEC))}
    params = {"metric": "utilization", "aggregate": "count", "step": "1h", "groupBy": "none", **window}
    query = MultiDict([*params.items(), ("host", "a"), ("host", "b"), ("gpuIndex", "1")])
    answer = client.get("/metrics/series", query_string=query).get_json()
    (series,) = answer["series"]
    assert sum(value for _, value in series["points"]) == sum(1 for r in fleet if r["gpuIndex"] == 1)
    assert answer["step"] == 3600 and answer["field"] is None


def test_the_default_window_is_the_last_hour(client):
    now = datetime.now(UTC)
    client.post(
        "/metrics",
        json=[
            {"timestamp": iso(now - timedelta(minutes=m)), "gpuIndex": 0, "metric": "power", "watts": m}
            for m in (5, 50, 70)
        ],
    )
    answer = client.get("/metrics/series", query_string={"metric": "power", "field": "watts", "step": "1d"}).get_json()
    (series,) = answer["series"]
    assert sum(1 for _ in series["points"]) >= 1
    assert sorted(v for _, v in series["points"]) in ([27.5], [5, 50]), "the record of 70 minutes ago is out"


def test_a_re_send_after_the_records_expired_is_not_counted_twice(make_app):
    app = make_app(metrics_retention_hours=1.0, rollup_retention_days=30.0)
    client = app.test_client()
    minute = T0.replace(second=0) + timedelta(minutes=3)
    sent = [
        {"timestamp": iso(minute + timedelta(seconds=s)), "gpuIndex": 0, "metric": "power", "watts": s}
        for s in range(30)
    ]
    assert client.post("/metrics", json=sent).status_code == 201
    retention.purge(app_state(app).db, retention_hours=1, rollup_days=30, pause=0)
    window = {"start": iso(minute), "end": iso(minute + timedelta(seconds=59))}
    count = {"metric": "power", "aggregate": "count", "step": "1m", **window}
    before = client.get("/metrics/series", query_string=count).get_json()["series"]
    again = client.post("/metrics", json=sent[:3])
    assert again.status_code == 422 and again.get_json()["stored"] == 0
    reason = again.get_json()["rejected"][0]["errors"]["timestamp"][0]
    assert "summarized and its records have expired" in reason
    assert client.get("/metrics/series", query_string=count).get_json()["series"] == before
    gap = minute + timedelta(minutes=10)  # no record ever came for it: a backfill fills it
    filled = client.post("/metrics", json={"timestamp": iso(gap), "gpuIndex": 0, "metric": "power", "watts": 7})
    assert filled.status_code == 201 and filled.get_json()["stored"] == 1
    assert (
        client.post("/metrics", json={"timestamp": iso(gap), "gpuIndex": 0, "metric": "power", "watts": 7}).get_json()[
            "duplicates"
        ]
        == 1
    )
