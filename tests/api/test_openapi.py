"""The OpenAPI document is complete and true.

Complete: every status an operation can answer is documented with its schema, every
answer names X-Request-ID, every 503 Retry-After, every parameter and every 2xx answer
has an example, and no schema is left that nothing uses; openapi-spec-validator agrees
it is a valid OpenAPI document. True: schemathesis, with every check it has (response
schemas and headers included), finds nothing against the service under gunicorn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import schemathesis
from conftest import Server
from hypothesis import HealthCheck, given, note, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from gpumetrics.api.metrics import BATCH_EXAMPLE
from gpumetrics.records import crawler

DATABASE_OPERATIONS = {"/metrics", "/metrics/aggregate", "/gpus", "/stats", "/health"}


@pytest.fixture
def document(client) -> dict:
    return client.get("/openapi.json").get_json()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_document_is_valid_openapi(document):
    validate(document)


def test_every_answer_names_its_headers(document):
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status == "414":  # gunicorn's own answer to a request line over its limit
                assert "text/html" in response["content"], (method, path)
                continue
            assert "X-Request-ID" in response.get("headers", {}), (method, path, status)
            if status == "503":
                assert "Retry-After" in response["headers"], (method, path)
        if path in DATABASE_OPERATIONS:
            assert "503" in operation["responses"], (method, path)


def test_every_error_status_is_documented_with_a_schema(document):
    expected = {
        ("post", "/metrics"): {"201", "400", "413", "415", "422", "503"},
        ("get", "/metrics"): {"200", "308", "422", "503"},
        ("get", "/metrics/aggregate"): {"200", "422", "503"},
        ("get", "/gpus"): {"200", "422", "503"},
        ("get", "/stats"): {"200", "422", "503"},
        ("get", "/health"): {"200", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = document["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path, set(responses))
        for status in statuses - {"308"}:
            assert "schema" in responses[status]["content"]["application/json"], (method, path, status)


def test_every_parameter_and_every_success_has_an_example(document):
    for path, method, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            assert "example" in parameter, (method, path, parameter["name"])
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                for media, content in response["content"].items():
                    assert "example" in content or "examples" in content, (method, path, status, media)


def test_no_schema_is_left_that_nothing_uses(document):
    text = json.dumps(document["paths"])
    schemas = document["components"]["schemas"]
    used, frontier = set(), text
    while True:
        found = {name for name in schemas if f'"#/components/schemas/{name}"' in frontier} - used
        if not found:
            break
        used |= found
        frontier = json.dumps([schemas[name] for name in found])
    assert set(schemas) == used


# ---- schemathesis against gunicorn ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("openapi")
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'metrics.db'}",
        "METRICS_RETENTION_HOURS": "0",  # generated timestamps span the years 1 to 9999
        "MAX_CLOCK_SKEW_SEC": "0",
        "ACCESS_LOG": "false",
    }
    server = Server(env, folder)
    server.wait_ready()
    for body in (BATCH_EXAMPLE, [crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE]):
        assert requests.post(server.url + "/metrics", json=body, timeout=30).status_code == 201
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_schema(served):
    config = schemathesis.Config.from_dict(
        {
            "seed": 20251203,
            "warnings": False,
            "generation": {"max-examples": 25, "deterministic": True},
            "checks": {
                "negative_data_rejection": {"expected-statuses": ["400", "404", "405", "413", "414", "415", "422"]},
                # 422 too: rules between fields that OpenAPI 3.0 cannot state (an aggregate
                # needs a field, start comes before end, a gpu record names its GPU).
                "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "422"]},
            },
        }
    )
    return schemathesis.openapi.from_url(served.url + "/openapi.json", config=config)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_passes_every_check_under_gunicorn(served_schema, mode):
    """Every check schemathesis has, on every operation: positive cases must be accepted
    and answered as documented; negative cases rejected with a documented status."""
    for result in served_schema.get_all_operations():
        operation = result.ok()
        takes_input = "parameters" in operation.definition.raw or "requestBody" in operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing of /health to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case):
            note(f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:300]}")
            case.call_and_validate()

        check()
