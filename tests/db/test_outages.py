"""PostgreSQL going away: 503 with a clear message, never 500, and recovery without a restart."""

from __future__ import annotations

import time

import pytest
import requests
from samples import record
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tcp_proxy import Proxy

pytestmark = pytest.mark.slow


def test_terminated_connections_are_replaced_transparently(gunicorn_on_postgres, postgres_url):
    # The service's connections carry a name of this test's, so that only they are terminated,
    # not those of tests running beside this one on the same server.
    schema = make_url(postgres_url).query["options"].split("=")[1]
    named = make_url(postgres_url).update_query_dict({"application_name": f"outage-{schema}"})
    server = gunicorn_on_postgres(WORKERS="2", DATABASE_URL=named.render_as_string(hide_password=False))
    assert requests.post(server.url + "/metrics", json=record("power"), timeout=10).status_code == 201
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": f"outage-{schema}"},
        ).scalar()
    admin.dispose()
    assert killed >= 1, schema
    for second in range(1, 6):
        answer = requests.post(server.url + "/metrics", json=record("power", second), timeout=10)
        assert answer.status_code == 201, answer.text
    assert requests.get(server.url + "/health", timeout=10).json()["database"] == "ok"
    assert requests.get(server.url + "/metrics", params={"aggregate": "count"}, timeout=10).json()["value"] == 6
    assert "Traceback" not in server.log.read_text()


def test_an_unreachable_database_gives_503_then_recovers_by_itself(gunicorn_on_postgres, postgres_url):
    url = make_url(postgres_url)
    proxy = Proxy((url.host, url.port or 5432))
    server = gunicorn_on_postgres(
        WORKERS="2", DATABASE_URL=url.set(port=proxy.port).render_as_string(hide_password=False)
    )
    assert requests.post(server.url + "/metrics", json=record("power"), timeout=10).status_code == 201

    proxy.cut()
    for attempt in range(4):
        health = requests.get(server.url + "/health", timeout=20)
        assert health.status_code == 503 and health.json()["status"] == "down"
        post = requests.post(server.url + "/metrics", json=record("power", 10 + attempt), timeout=20)
        assert post.status_code == 503, post.text
        assert post.json()["message"] == "The database is unavailable; try again."
        assert post.headers["Retry-After"]
        read = requests.get(server.url + "/metrics", timeout=20)
        assert read.status_code == 503

    proxy.restore()
    deadline = time.monotonic() + 30
    while requests.get(server.url + "/health", timeout=20).status_code != 200:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    assert requests.post(server.url + "/metrics", json=record("power", 99), timeout=10).status_code == 201
    assert requests.get(server.url + "/metrics", params={"aggregate": "count"}, timeout=10).json()["value"] == 2
    proxy.cut()
