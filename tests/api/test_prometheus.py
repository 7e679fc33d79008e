"""GET /prometheus: the fleet in dcgm-exporter's names, labels and units, checked by promtool and a real Prometheus.

The records are timestamped near now: a series older than STALE_AFTER_SEC is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import Server, wait_for
from promtools import Prometheus, check_metrics, families, samples, scrape_config, value
from samples import iso, record
from sqlalchemy import event

from gpumetrics.api.prometheus import DCGM_FIELDS, EXAMPLE
from gpumetrics.records import crawler
from gpumetrics.state import app_state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HOSTS = ("node-a", "node-b")
MODEL = "NVIDIA A100-SXM4-80GB"
HELP = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "Memory utilization (in %).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_TOTAL": "Framebuffer memory total (in MiB).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_MEM_CLOCK": "Memory clock frequency (in MHz).",
}


def ago(seconds: float = 0) -> str:
    return iso(datetime.now(UTC) - timedelta(seconds=seconds))


def gpu_values(h: int, g: int) -> dict[str, float]:
    """What GPU g of host h reports, by DCGM name; node-a sends smMHz, node-b only graphicsMHz."""
    return {
        "DCGM_FI_DEV_GPU_UTIL": 10 * h + g + 1,
        "DCGM_FI_DEV_MEM_COPY_UTIL": 5 * h + g,
        "DCGM_FI_DEV_FB_USED": 1000 * h + 100 * g + 1,
        "DCGM_FI_DEV_FB_FREE": 80000 - 1000 * h - 100 * g,
        "DCGM_FI_DEV_FB_TOTAL": 81920,
        "DCGM_FI_DEV_GPU_TEMP": 40 + 10 * h + g,
        "DCGM_FI_DEV_POWER_USAGE": 100.5 + 50 * h + g,
        "DCGM_FI_DEV_SM_CLOCK": 1410 - g if h == 0 else 1200 + g,
        "DCGM_FI_DEV_MEM_CLOCK": 1593,
    }


def fleet_records(seconds_ago: float = 1) -> list[dict]:
    """Two hosts with two GPUs each, every kind, and a process per GPU."""
    out = []
    for h, host in enumerate(HOSTS):
        for g in (0, 1):
            v = gpu_values(h, g)
            ident = {"timestamp": ago(seconds_ago), "host": host, "uuid": f"GPU-{host}-{g}", "name": MODEL}
            clocks = {"graphicsMHz": 1200 + g, "memoryMHz": v["DCGM_FI_DEV_MEM_CLOCK"]}
            if h == 0:
                clocks["smMHz"] = v["DCGM_FI_DEV_SM_CLOCK"]
            out += [
                record(
                    "memory",
                    0,
                    g,
                    totalMiB=v["DCGM_FI_DEV_FB_TOTAL"],
                    usedMiB=v["DCGM_FI_DEV_FB_USED"],
                    freeMiB=v["DCGM_FI_DEV_FB_FREE"],
                    **ident,
                ),
                record(
                    "utilization",
                    0,
                    g,
                    gpuPercent=v["DCGM_FI_DEV_GPU_UTIL"],
                    memoryPercent=v["DCGM_FI_DEV_MEM_COPY_UTIL"],
                    **ident,
                ),
                record("temperature", 0, g, celsius=v["DCGM_FI_DEV_GPU_TEMP"], **ident),
                record("power", 0, g, watts=v["DCGM_FI_DEV_POWER_USAGE"], **ident),
                {**record("clocks", 0, g, **ident), **clocks},
                record("process", 0, g, pid=4000 + g, usedMiB=512 + g, processName="python train.py", **ident),
            ]
    return out


def labels_of(h: int, g: int) -> dict[str, str]:
    host = HOSTS[h]
    return {
        "gpu": str(g),
        "UUID": f"GPU-{host}-{g}",
        "device": f"nvidia{g}",
        "modelName": MODEL,
        "Hostname": host,
        "instance": host,
    }


def scrape(client, **kwargs) -> str:
    answer = client.get("/prometheus", **kwargs)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    return answer.get_data(as_text=True)


@pytest.fixture
def fleet(client):
    assert client.post("/metrics", json=fleet_records()).status_code == 201
    return client


def test_every_gpu_field_under_dcgm_names_with_help_units_labels_and_no_timestamps(fleet):
    text = scrape(fleet)
    found = families(text)
    for name, help_text in HELP.items():
        assert found[name].type == "gauge" and found[name].documentation == help_text, name
        got = {tuple(sorted(s.labels.items())): s.value for s in found[name].samples}
        want = {tuple(sorted(labels_of(h, g).items())): gpu_values(h, g)[name] for h in (0, 1) for g in (0, 1)}
        assert got == want, name
    assert {field.name for field in DCGM_FIELDS} == set(HELP)
    first = next(line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    assert first.startswith('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-node-a-0",device="nvidia0",modelName='), (
        "dcgm-exporter's label order"
    )
    for line in text.splitlines():
        if not line.startswith("#"):
            after_labels = line.rsplit("}", 1)[1] if "{" in line else line.split(" ", 1)[1]
            assert len(after_labels.split()) == 1, f"a value and no timestamp: {line}"
    check_metrics(text)
    check_metrics(EXAMPLE)  # the OpenAPI document's


def test_processes_have_pid_and_a_name_cut_to_128_characters(client):
    long_name, now = "/opt/conda/bin/python " + "x" * 300, ago(1)  # one time: the GPU's current processes
    batch = [
        record("process", 0, 0, timestamp=now, host="node-a", pid=7, usedMiB=300, processName=long_name),
        record("process", 0, 0, timestamp=now, host="node-a", pid=8, usedMiB=200.5),
    ]
    assert client.post("/metrics", json=batch).status_code == 201
    got = sorted(samples(scrape(client), "gpumetrics_process_used_mib"), key=lambda s: s[0]["pid"])
    base = {"gpu": "0", "device": "nvidia0", "Hostname": "node-a", "instance": "node-a"}
    assert got == [
        ({**base, "pid": "7", "process_name": long_name[:128]}, 300.0),
        ({**base, "pid": "8"}, 200.5),
    ]


def test_labels_the_service_does_not_know_are_left_out(client):
    """A GPU known by UUID alone has no gpu/device; a process tied to no GPU has none of a GPU's
    labels; the local host's GPUs have no Hostname/instance (Prometheus sets instance to the target)."""
    now = ago(1)
    by_uuid = {**crawler.GPU_EXAMPLE, "timestamp": now}
    no_gpu = {**crawler.PROCESS_EXAMPLE, "timestamp": now, "gpuId": "unknown", "pid": 99}
    local = record("temperature", 0, 3, timestamp=now, celsius=55)
    assert client.post("/metrics", json=[by_uuid, no_gpu, local]).status_code == 201
    text = scrape(client)
    temps = {tuple(sorted(labels)): v for labels, v in samples(text, "DCGM_FI_DEV_GPU_TEMP")}
    host = crawler.GPU_EXAMPLE["hostname"]
    uuid_only = {"UUID": crawler.GPU_EXAMPLE["gpuId"], "modelName": crawler.GPU_EXAMPLE["gpuName"]}
    assert temps == {
        tuple(sorted({**uuid_only, "Hostname": host, "instance": host})): 62.0,
        ("device", "gpu"): 55.0,
    }
    processes = samples(text, "gpumetrics_process_used_mib")
    assert processes == [({"Hostname": host, "instance": host, "pid": "99", "process_name": "python"}, 2048.0)]
    check_metrics(text)


def test_label_values_are_escaped_as_the_format_says(client):
    name = 'A100 "SXM"\\80GB\nrev 2'
    host = 'rack\\1 "east"'
    now = ago(1)
    batch = [
        record("temperature", 0, 0, timestamp=now, host=host, name=name, celsius=61),
        record("process", 0, 0, timestamp=now, host=host, pid=1, usedMiB=1, processName='say "hi"\n\\'),
    ]
    assert client.post("/metrics", json=batch).status_code == 201
    text = scrape(client)
    assert '\\"SXM\\"\\\\80GB\\nrev 2' in text
    [(labels, _)] = samples(text, "DCGM_FI_DEV_GPU_TEMP")
    assert labels["modelName"] == name and labels["Hostname"] == labels["instance"] == host
    [(labels, _)] = samples(text, "gpumetrics_process_used_mib")
    assert labels["process_name"] == 'say "hi"\n\\'
    check_metrics(text)


def test_stale_series_and_silent_gpus_are_left_out(client):
    """STALE_AFTER_SEC (120): GPU 1 silent for 5 minutes is gone; GPU 0's clocks, last sent 5
    minutes ago, and its process, gone as long, are left out; its fresh series stay."""
    batch = [
        record("temperature", 0, 0, timestamp=ago(1), celsius=50),
        record("clocks", 0, 0, timestamp=ago(300)),
        record("process", 0, 0, timestamp=ago(300), pid=5, usedMiB=10),
        record("temperature", 0, 1, timestamp=ago(300), celsius=70),
        record("power", 0, 1, timestamp=ago(300), watts=70),
    ]
    assert client.post("/metrics", json=batch).status_code == 201
    text = scrape(client)
    assert samples(text, "DCGM_FI_DEV_GPU_TEMP") == [({"gpu": "0", "device": "nvidia0"}, 50.0)]
    for name in ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_POWER_USAGE", "gpumetrics_process_used_mib"):
        assert samples(text, name) == [], name
    assert "# TYPE DCGM_FI_DEV_SM_CLOCK gauge" in text, "every family keeps its HELP and TYPE"


def test_a_scrape_is_the_same_few_queries_whatever_the_fleet(app):
    """The GPUs' values in one query of latest (and the processes in one), not one per GPU:
    1 GPU or 40, the same statements, none reading the records."""
    client = app.test_client()
    statements: list[str] = []
    engine = app_state(app).db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        counts = []
        for gpus in (1, 40):
            batch = [record(kind, 0, g, timestamp=ago(1)) for g in range(gpus) for kind in ("memory", "power")]
            assert client.post("/metrics", json=batch).status_code == 201
            statements.clear()
            text = scrape(client)
            counts.append(len(statements))
            assert len(samples(text, "DCGM_FI_DEV_POWER_USAGE")) == gpus
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert counts[0] == counts[1], statements
    assert sum("FROM latest" in s for s in statements) == 2, "one for the GPUs' values, one for the processes"
    assert not any("FROM records" in s for s in statements), statements


def test_a_read_key_is_needed_when_read_keys_are_set_and_no_parameter_is_taken(make_app):
    client = make_app(read_api_keys=("reader",), ingest_api_keys=("writer",)).test_client()
    assert (
        client.post("/metrics", json=record("power", timestamp=ago(1)), headers={"X-API-Key": "writer"}).status_code
        == 201
    )
    refused = client.get("/prometheus")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"]
    assert client.get("/prometheus", headers={"Authorization": "Bearer writer"}).status_code == 401
    text = scrape(client, headers={"Authorization": "Bearer reader"})
    assert value(text, "DCGM_FI_DEV_POWER_USAGE", gpu="0") == 165.5
    answer = client.get("/prometheus?gpu=0", headers={"X-API-Key": "reader"})
    assert answer.status_code == 422, "a parameter is a 422 that names it, as on every read"
    assert answer.get_json()["errors"]["query"]["gpu"] == ["Unknown parameter; accepted: none. Got gpu='0'."]


# ---- a real Prometheus against the service under gunicorn --------------------------------


DASHBOARD = {  # Grafana dashboard 12239's queries, $instance and $gpu as Grafana fills them for "All"
    "temperature": 'DCGM_FI_DEV_GPU_TEMP{instance=~"(node-a|node-b)", gpu=~"(0|1)"}',
    "average temperature": 'avg(DCGM_FI_DEV_GPU_TEMP{instance=~"(node-a|node-b)", gpu=~"(0|1)"})',
    "power": 'DCGM_FI_DEV_POWER_USAGE{instance=~"(node-a|node-b)", gpu=~"(0|1)"}',
    "total power": 'sum(DCGM_FI_DEV_POWER_USAGE{instance=~"(node-a|node-b)", gpu=~"(0|1)"})',
    "SM clocks": 'DCGM_FI_DEV_SM_CLOCK{instance=~"(node-a|node-b)", gpu=~"(0|1)"} * 1000000',
    "utilization": 'DCGM_FI_DEV_GPU_UTIL{instance=~"(node-a|node-b)", gpu=~"(0|1)"}',
    "framebuffer used": 'DCGM_FI_DEV_FB_USED{instance=~"(node-a|node-b)", gpu=~"(0|1)"}',
}


def _by_gpu(result: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["metric"]["instance"], r["metric"]["gpu"]): float(r["value"][1]) for r in result}


def _expected(name: str, scale: float = 1) -> dict[tuple[str, str], float]:
    return {(HOSTS[h], str(g)): gpu_values(h, g)[name] * scale for h in (0, 1) for g in (0, 1)}


def _check_dashboard(prometheus: Prometheus) -> None:
    assert _by_gpu(prometheus.wait(DASHBOARD["temperature"], 4)) == _expected("DCGM_FI_DEV_GPU_TEMP")
    temps = _expected("DCGM_FI_DEV_GPU_TEMP").values()
    assert float(prometheus.query(DASHBOARD["average temperature"])[0]["value"][1]) == sum(temps) / 4
    assert _by_gpu(prometheus.query(DASHBOARD["power"])) == _expected("DCGM_FI_DEV_POWER_USAGE")
    watts = sum(_expected("DCGM_FI_DEV_POWER_USAGE").values())
    assert float(prometheus.query(DASHBOARD["total power"])[0]["value"][1]) == pytest.approx(watts)
    assert _by_gpu(prometheus.query(DASHBOARD["SM clocks"])) == _expected("DCGM_FI_DEV_SM_CLOCK", 1e6)
    assert _by_gpu(prometheus.query(DASHBOARD["utilization"])) == _expected("DCGM_FI_DEV_GPU_UTIL")
    assert _by_gpu(prometheus.query(DASHBOARD["framebuffer used"])) == _expected("DCGM_FI_DEV_FB_USED")
    # the dashboard's variables: label_values(DCGM_FI_DEV_GPU_TEMP, instance) and (..., gpu)
    assert prometheus.api("label/instance/values", **{"match[]": "DCGM_FI_DEV_GPU_TEMP"}) == list(HOSTS)
    assert prometheus.api("label/gpu/values", **{"match[]": "DCGM_FI_DEV_GPU_TEMP"}) == ["0", "1"]
    one = prometheus.api("series", **{"match[]": 'DCGM_FI_DEV_GPU_TEMP{instance="node-b",gpu="1"}'})
    assert [{k: v for k, v in s.items() if k != "job"} for s in one] == [
        {"__name__": "DCGM_FI_DEV_GPU_TEMP", **labels_of(1, 1)}
    ]


@pytest.fixture
def two_services(database_url, tmp_path):
    """The service under gunicorn on one database, open and with READ_API_KEYS, started side by side."""
    env = {"DATABASE_URL": database_url, "METRICS_RETENTION_HOURS": "0", "WORKERS": "1", "ACCESS_LOG": "false"}
    folders = [tmp_path / "open-metrics", tmp_path / "keyed-metrics"]  # not private ones: these are killed
    services = [
        Server({**env, "PROMETHEUS_MULTIPROC_DIR": str(folders[0])}, tmp_path),
        Server({**env, "PROMETHEUS_MULTIPROC_DIR": str(folders[1]), "READ_API_KEYS": "scraper-key"}, tmp_path),
    ]
    try:
        for service in services:
            service.wait_ready()
        yield services
    finally:
        for service in services:
            service.kill()  # a graceful stop shows nothing here, and takes seconds


@pytest.mark.slow
def test_grafana_dashboard_queries_through_a_real_prometheus(two_services, tmp_path):
    """The README's scrape config, as it is (open service) and with the read key as bearer token
    (READ_API_KEYS set): Prometheus scrapes /prometheus under gunicorn, and dashboard 12239's
    queries answer with the posted values. Without the key the keyed target is down, on a 401."""
    open_service, keyed = two_services
    assert requests.post(open_service.url + "/metrics", json=fleet_records(), timeout=30).status_code == 201
    first, second = tmp_path / "open", tmp_path / "keyed"
    first.mkdir()
    second.mkdir()
    open_target, keyed_target = (server.url.removeprefix("http://") for server in two_services)
    jobs = [scrape_config(keyed_target, key="scraper-key"), scrape_config(keyed_target, job="no-key")]
    with Prometheus(first, [scrape_config(open_target)]) as plain, Prometheus(second, jobs) as with_key:
        _check_dashboard(plain)
        result = with_key.wait('DCGM_FI_DEV_GPU_TEMP{job="gpumetrics"}', 4)
        assert _by_gpu(result) == _expected("DCGM_FI_DEV_GPU_TEMP")
        refused = wait_for(lambda: [t for t in with_key.targets() if t["labels"]["job"] == "no-key" and t["lastError"]])
        assert refused[0]["health"] == "down" and "401" in refused[0]["lastError"], refused
