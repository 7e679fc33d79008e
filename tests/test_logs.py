"""Logs an operator can read: one access line per request, a warning per refused key, a
quiet start, and nothing at all from an idle service at INFO."""

from __future__ import annotations

import logging
import re
import time

import pytest
import requests
from conftest import wait_for
from samples import record

import config
from gpumetrics import startup

ACCESS = re.compile(r"^(\S+) (\S+) (\d{3}) (\d+\.\d) ms request_id=(\S+) client=(.+)$")


def access_lines(caplog) -> list[tuple[int, re.Match]]:
    return [(r.levelno, ACCESS.match(r.getMessage())) for r in caplog.records if r.name == "gpumetrics.access"]


def test_one_access_line_per_request_without_secrets(client, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = ("S3CRET-key", "S3CRET-token", "S3CRET-pass")
    query = f"gpuIndex=0&api_key={secrets[0]}&access_token={secrets[1]}&limit=5&Password={secrets[2]}"
    headers = {"X-Request-ID": "trace-7", "X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    assert client.get(f"/metrics?{query}", headers=headers).status_code == 422  # api_key is no parameter
    assert client.post("/metrics", json=record("power")).status_code == 201
    assert client.get("/no/such/page").status_code == 404
    (first, second, third) = access_lines(caplog)
    assert first[0] == logging.INFO and first[1].groups()[:3] == ("GET", "/metrics?gpuIndex=0&limit=5", "422")
    assert first[1].group(5, 6) == ("trace-7", "127.0.0.1 forwarded=203.0.113.9")
    assert second[1].group(1, 2, 3) == ("POST", "/metrics", "201") and len(second[1].group(5)) == 32
    assert third[1].group(1, 2, 3) == ("GET", "/no/such/page", "404")
    for secret in secrets:
        assert secret not in caplog.text


def test_a_successful_health_probe_is_logged_only_at_debug(client, caplog):
    caplog.set_level(logging.DEBUG)
    assert client.get("/health").status_code == 200
    ((level, line),) = access_lines(caplog)
    assert level == logging.DEBUG and line.group(2, 3) == ("/health", "200")


def test_access_log_can_be_switched_off(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    app = make_app(access_log=False)
    assert app.test_client().get("/gpus").status_code == 200
    assert access_lines(caplog) == []


@pytest.mark.parametrize("headers, says", [({"X-API-Key": "wrong-K3Y-5e1"}, "a wrong API key"), ({}, "no API key")])
def test_a_refused_key_logs_one_warning_with_the_client_address_never_the_key(make_app, caplog, headers, says):
    caplog.set_level(logging.DEBUG)
    app = make_app(ingest_api_keys=("right-K3Y-77a",), read_api_keys=("read-K3Y-0c4",))
    http = app.test_client()
    headers = {**headers, "X-Forwarded-For": "198.51.100.4"}
    assert http.post("/metrics", json=record(), headers=headers).status_code == 401
    assert http.get("/gpus", headers=headers).status_code == 401
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"POST /metrics: {says} from 127.0.0.1 forwarded=198.51.100.4; answered 401")
    assert warnings[1].startswith(f"GET /gpus: {says} from 127.0.0.1")
    for key in ("wrong-K3Y-5e1", "right-K3Y-77a", "read-K3Y-0c4"):
        assert key not in caplog.text


@pytest.mark.parametrize("level, shown", [("INFO", False), ("DEBUG", True)])
def test_the_libraries_routine_lines_show_only_at_debug(level, shown):
    startup.configure_logging(config.load({"LOG_LEVEL": level}))
    try:
        for name in ("apscheduler.executors.default", "apscheduler.scheduler", "alembic.runtime.migration"):
            assert logging.getLogger(name).isEnabledFor(logging.INFO) is shown, name
    finally:
        startup.configure_logging(config.load({}))


@pytest.mark.slow
def test_a_start_says_little_once_and_an_idle_service_nothing(gunicorn):
    """Three workers, retention on, ingest open: the master's lines once, then silence."""
    server = gunicorn(WORKERS="3", METRICS_RETENTION_HOURS="168")
    wait_for(lambda: "retention: deleted" in server.log.read_text(), timeout=30)
    wait_for(lambda: server.log.read_text().count("Booting worker") == 3, timeout=30)
    time.sleep(1.0)  # the last worker's scheduler starts
    started = server.log.read_text().splitlines()
    assert sum("INGEST_API_KEYS is empty" in line for line in started) == 1, "once per start, not per worker"
    assert sum("gpumetrics.startup" in line for line in started) == 1
    assert not [line for line in started if "alembic" in line or "apscheduler" in line]

    time.sleep(3.0)
    assert server.log.read_text().splitlines()[len(started) :] == [], "an idle service writes nothing at INFO"

    assert requests.get(server.url + "/gpus", params={"host": "a"}, timeout=10).status_code == 200
    new = wait_for(lambda: server.log.read_text().splitlines()[len(started) :])
    assert len(new) == 1 and re.search(r"INFO gpumetrics\.access: GET /gpus\?host=a 200 [\d.]+ ms ", new[0]), new
