"""GET /health, the redirect to the docs, and what the OpenAPI document describes."""

from __future__ import annotations

import shutil

import pytest

import config
from gpumetrics import create_app
from gpumetrics.kinds import KINDS
from gpumetrics.state import app_state


def test_health_is_ok_when_the_database_answers(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "ok" and answer.get_json()["database"] == "ok"


def test_health_is_503_with_the_reason_when_the_database_is_gone(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    app = create_app(config.load({"DATABASE_URL": f"sqlite:///{folder / 'metrics.db'}"}))
    client = app.test_client()
    app_state(app).db.dispose()
    shutil.rmtree(folder)
    answer = client.get("/health")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "down"
    assert "unable to open database file" in answer.get_json()["database"]
    reading = client.get("/metrics")
    assert reading.status_code == 503 and "database" in reading.get_json()["message"]


def test_root_redirects_to_the_docs(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/docs")


def test_favicon_is_served(client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    answer.close()


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").get_json()


def test_openapi_describes_every_endpoint(spec):
    assert spec["openapi"].startswith("3.")
    assert {"/metrics", "/gpus", "/stats", "/health"} <= set(spec["paths"])
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            assert operation["responses"], f"{method} {path} documents no response"


def test_openapi_describes_every_kind_field_with_unit_and_bounds(spec):
    schemas = spec["components"]["schemas"]
    for kind in KINDS.values():
        properties = schemas[f"{kind.name.capitalize()}Record"]["properties"]
        for field in kind.fields:
            described = properties[field.name]
            assert field.description in described["description"]
            if field.unit:
                assert field.unit in described["description"]
            if field.minimum is not None:
                assert described["minimum"] == field.minimum
            if field.maximum is not None:
                assert described["maximum"] == field.maximum


def test_openapi_has_the_ingest_examples_and_errors(spec):
    post = spec["paths"]["/metrics"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert examples["one"]["value"]["metric"] == "memory"
    assert {r["metric"] for r in examples["batch"]["value"]} == set(KINDS)
    assert {"201", "400", "413", "415", "422"} <= set(post["responses"])
    parameters = {p["name"] for p in spec["paths"]["/metrics"]["get"]["parameters"]}
    assert {
        "gpuIndex",
        "metric",
        "host",
        "start",
        "end",
        "limit",
        "order",
        "cursor",
        "aggregate",
        "field",
    } <= parameters


def test_docs_pages_are_served_from_the_service(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).get_data(as_text=True)
        assert "/static/vendor/" in html
        assert "http://" not in html and "https://" not in html


def test_docs_pages_carry_a_strict_content_security_policy(client):
    for page in ("/docs", "/redoc"):
        policy = client.get(page).headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self';" in policy
        assert "http" not in policy


@pytest.mark.parametrize(
    "path", ["/docs", "/openapi.json", "/health", "/metrics", "/nowhere", "/static/docs/redoc.css"]
)
def test_every_answer_says_nosniff_and_carries_a_request_id(client, path):
    answer = client.get(path, headers={"X-Request-ID": "probe-1"})
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Request-ID"] == "probe-1"
    answer.close()
