"""GET /metrics/latest (the fleet now) and GET /metrics/export (everything, streamed)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from samples import FIELDS, record
from werkzeug.datastructures import MultiDict

from gpumetrics.store.export import CSV_COLUMNS


def latest(client, **params):
    answer = client.get("/metrics/latest", query_string=MultiDict(params.items()))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


@pytest.fixture
def sent(client):
    batch = []
    for host in ("a", "b"):
        for gpu in (0, 1):
            for second in (10, 30, 20):  # late and out of order
                for kind in FIELDS:
                    if kind != "process":
                        batch.append(record(kind, second, gpu, host=host, uuid=f"U-{host}{gpu}", name="A100"))
            batch += [record("process", 30, gpu, host=host, pid=pid, usedMiB=pid) for pid in (7, 8)]
            batch.append(record("process", 10, gpu, host=host, pid=9, usedMiB=9))
    assert client.post("/metrics", json=batch).status_code == 201
    assert client.post("/metrics", json=batch[:40]).get_json()["duplicates"] == 40
    return batch


def test_the_newest_record_of_every_gpu_and_kind(client, sent):
    items = latest(client)
    kinds = [k for k in FIELDS if k != "process"]
    assert len(items) == 4 * (len(kinds) + 2)
    for item in items:
        assert item["timestamp"] == "2025-12-01T18:00:30Z", item
    processes = sorted((i["host"], i["gpuIndex"], i["pid"]) for i in items if i["metric"] == "process")
    assert processes == [(h, g, p) for h in "ab" for g in (0, 1) for p in (7, 8)]
    sample = next(i for i in items if i["metric"] == "memory" and i["host"] == "b" and i["gpuIndex"] == 1)
    assert sample == record("memory", 30, 1, host="b", uuid="U-b1", name="A100")


def test_a_newer_process_time_replaces_every_older_process(client, sent):
    client.post("/metrics", json=record("process", 40, 0, host="a", pid=11, usedMiB=1))
    client.post("/metrics", json=record("process", 35, 0, host="a", pid=12, usedMiB=1))  # late: not the newest
    mine = latest(client, host="a", gpuIndex=0, metric="process")
    assert [(i["pid"], i["timestamp"]) for i in mine] == [(11, "2025-12-01T18:00:40Z")]


def test_filters_repeat_and_take_aliases(client, sent):
    both = latest(client, hostname="b", metric="power")
    assert [(i["host"], i["gpuIndex"]) for i in both] == [("b", 0), ("b", 1)]
    query = MultiDict([("uuid", "U-a1"), ("uuid", "U-b0"), ("metric", "temperature")])
    found = client.get("/metrics/latest", query_string=query).get_json()["items"]
    assert sorted(i["uuid"] for i in found) == ["U-a1", "U-b0"]


def _all_pages(client):
    items, cursor = [], None
    while True:
        page = client.get(
            "/metrics", query_string={"limit": 10000, **({"cursor": cursor} if cursor else {})}
        ).get_json()
        items += page["items"]
        cursor = page["next"]
        if cursor is None:
            return items


def test_export_ndjson_is_every_record_in_time_order(client, sent):
    answer = client.get("/metrics/export", query_string={"format": "ndjson"})
    assert answer.status_code == 200 and answer.mimetype == "application/x-ndjson"
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=") and disposition.endswith('.ndjson"')
    lines = [json.loads(line) for line in answer.get_data(as_text=True).splitlines()]
    assert lines == _all_pages(client)
    assert [line["timestamp"] for line in lines] == sorted(line["timestamp"] for line in lines)


def test_export_csv_has_the_header_and_every_field(client, sent):
    answer = client.get("/metrics/export", query_string={"format": "csv", "host": "a", "metric": "process"})
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"].endswith('.csv"')
    text = answer.get_data(as_text=True)
    assert text.splitlines()[0].startswith("timestamp,host,gpuIndex,uuid,name,metric,totalMiB,usedMiB,")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 6 and {row["metric"] for row in rows} == {"process"}
    assert {row["host"] for row in rows} == {"a"} and all(row["celsius"] == "" for row in rows)
    assert sorted(int(row["pid"]) for row in rows) == [7, 7, 8, 8, 9, 9]


def test_export_pages_through_more_than_a_page(client, monkeypatch):
    from gpumetrics.store import export

    monkeypatch.setattr(export, "PAGE", 7)
    client.post("/metrics", json=[record("power", s) for s in range(50)])
    lines = client.get("/metrics/export").get_data(as_text=True).splitlines()
    assert [json.loads(line)["timestamp"] for line in lines] == [record("power", s)["timestamp"] for s in range(50)]
