"""GET /metrics: filters, ordering, cursor pagination, aggregates, and bad parameters."""

from __future__ import annotations

import random
import statistics

import pytest
from samples import FIELDS, record


def get(client, **params):
    """GET /metrics; an aggregate is answered by GET /metrics/aggregate, which it redirects to."""
    return client.get("/metrics", query_string=params, follow_redirects=True)


@pytest.fixture
def fleet(client):
    """Two hosts, two GPUs each, every kind at 60 seconds; random utilization values."""
    rng = random.Random(7)
    sent = []
    for host in ("a", "b"):
        for gpu in (0, 1):
            for second in range(60):
                sent.append(
                    record(
                        "utilization",
                        second,
                        gpu,
                        host=host,
                        gpuPercent=rng.randint(0, 100),
                        memoryPercent=rng.uniform(0, 100),
                    )
                )
                sent += [record(kind, second, gpu, host=host) for kind in FIELDS if kind != "utilization"]
    rng.shuffle(sent)
    assert client.post("/metrics", json=sent).status_code == 201
    return sent


def test_filters_select_exactly_the_matching_records(client, fleet):
    items = get(
        client, host="a", gpuIndex=1, metric="utilization", start="2025-12-01T18:00:10Z", end="2025-12-01T18:00:19Z"
    ).get_json()["items"]
    expected = [
        r
        for r in fleet
        if r["host"] == "a"
        and r["gpuIndex"] == 1
        and r["metric"] == "utilization"
        and "18:00:10" <= r["timestamp"][11:19] <= "18:00:19"
    ]
    assert len(items) == 10
    assert sorted(items, key=lambda r: r["timestamp"]) == sorted(expected, key=lambda r: r["timestamp"])


def test_naive_window_bounds_are_utc_and_inclusive(client, fleet):
    items = get(
        client, host="b", gpuIndex=0, metric="power", start="2025-12-01T19:00:05+01:00", end="2025-12-01T18:00:05"
    ).get_json()["items"]
    assert [r["timestamp"] for r in items] == ["2025-12-01T18:00:05Z"]


def test_order_asc_is_default_and_desc_reverses(client, fleet):
    up = get(client, metric="power", host="a", gpuIndex=0).get_json()["items"]
    down = get(client, metric="power", host="a", gpuIndex=0, order="desc").get_json()["items"]
    assert [r["timestamp"] for r in up] == sorted(r["timestamp"] for r in up)
    assert down == up[::-1]


def test_default_limit_is_1000(client, fleet):
    page = get(client).get_json()
    assert len(page["items"]) == 1000 and page["next"]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_pages_never_skip_or_repeat_while_records_arrive(client, order):
    client.post("/metrics", json=[record("power", s) for s in range(0, 100, 2)])
    seen, cursor, late = [], None, 1
    while True:
        params = {"metric": "power", "limit": 7, "order": order}
        if cursor:
            params["cursor"] = cursor
        page = get(client, **params).get_json()
        seen += [r["timestamp"] for r in page["items"]]
        # Between pages: a record in the past, and one in the future, arrive.
        client.post("/metrics", json=[record("power", late), record("power", 1000 + late)])
        late += 2
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a record was repeated"
    assert seen == sorted(seen, reverse=order == "desc")
    originals = sorted((record("power", s)["timestamp"] for s in range(0, 100, 2)), reverse=order == "desc")
    assert [t for t in seen if t in originals] == originals, "a record present from the start was skipped"
    if order == "asc":  # records arriving after the position reached are picked up too
        assert {record("power", 1000 + n)["timestamp"] for n in range(1, late - 2, 2)} <= set(seen)


def test_cursor_of_another_order_or_garbage_is_422(client, fleet):
    cursor = get(client, limit=1).get_json()["next"]
    answer = get(client, limit=1, order="desc", cursor=cursor)
    assert answer.status_code == 422
    assert "cursor" in answer.get_json()["errors"]["query"]
    assert get(client, cursor="not-a-cursor").status_code == 422


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"gpuIndex": "x"}, "gpuIndex"),
        ({"gpuIndex": -1}, "gpuIndex"),
        ({"metric": "fan"}, "metric"),
        ({"start": "last tuesday"}, "start"),
        ({"end": "2025-02-30"}, "end"),
        ({"order": "random"}, "order"),
        ({"aggregate": "median", "field": "watts"}, "aggregate"),
        ({"aggregate": "avg"}, "field"),
        ({"aggregate": "avg", "field": "nope"}, "field"),
        ({"aggregate": "avg", "field": "watts", "metric": "memory"}, "field"),
        ({"aggregate": "avg", "field": "usedMiB"}, "metric"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(client, params, parameter):
    answer = get(client, **params)
    assert answer.status_code == 422
    assert parameter in answer.get_json()["errors"]["query"]
    if "aggregate" in params:
        answer = client.get("/metrics/aggregate", query_string=params)
        assert answer.status_code == 422 and parameter in answer.get_json()["errors"]["query"]


def test_an_aggregate_on_get_metrics_is_redirected_to_its_own_resource(client, fleet):
    moved = client.get("/metrics", query_string={"aggregate": "avg", "field": "watts", "host": "a"})
    assert moved.status_code == 308
    assert moved.headers["Location"] == "/metrics/aggregate?aggregate=avg&field=watts&host=a"
    direct = client.get("/metrics/aggregate", query_string={"aggregate": "avg", "field": "watts", "host": "a"})
    assert client.get(moved.headers["Location"]).get_json() == direct.get_json()
    assert direct.get_json()["count"] == 120


def test_field_not_of_the_metric_lists_the_valid_ones(client):
    message = get(client, aggregate="max", field="watts", metric="memory").get_json()["errors"]["query"]["field"][0]
    assert "totalMiB, usedMiB, freeMiB" in message


@pytest.mark.parametrize("function", ["avg", "min", "max", "sum", "count"])
def test_aggregates_equal_an_independent_computation(client, fleet, function):
    rows = [
        r["gpuPercent"]
        for r in fleet
        if r["metric"] == "utilization" and r["host"] == "a" and r["timestamp"] <= "2025-12-01T18:00:30Z"
    ]
    expected = {"avg": statistics.fmean, "min": min, "max": max, "sum": sum, "count": len}[function](rows)
    answer = get(client, aggregate=function, field="gpuPercent", host="a", end="2025-12-01T18:00:30Z").get_json()
    assert answer["aggregate"] == function and answer["field"] == "gpuPercent"
    assert answer["count"] == len(rows) == 62
    assert answer["value"] == pytest.approx(expected, rel=1e-12)


def test_aggregate_of_a_float_field_with_shared_name(client, fleet):
    rows = [r["usedMiB"] for r in fleet if r["metric"] == "process" and r["gpuIndex"] == 1]
    answer = get(client, aggregate="avg", field="usedMiB", metric="process", gpuIndex=1).get_json()
    assert answer["value"] == pytest.approx(statistics.fmean(rows)) and answer["count"] == len(rows)


def test_count_without_field_counts_records(client, fleet):
    assert get(client, aggregate="count").get_json()["value"] == len(fleet)
    assert get(client, aggregate="count", metric="clocks", host="b").get_json()["count"] == 120


def test_aggregate_over_nothing_is_null(client, fleet):
    answer = get(client, aggregate="avg", field="watts", host="nowhere").get_json()
    assert answer == {"aggregate": "avg", "metric": None, "field": "watts", "value": None, "count": 0}


def test_float_values_keep_their_precision(client):
    client.post("/metrics", json=record("utilization", memoryPercent=33.333333333333336))
    assert get(client).get_json()["items"][0]["memoryPercent"] == 33.333333333333336
