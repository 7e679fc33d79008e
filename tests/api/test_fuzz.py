"""Generated input against the whole API, on both databases.

* Schemathesis reads the service's own /openapi.json (served in-process over WSGI) and
  sends every operation valid (positive) and invalid (negative) requests: explicit
  examples, the coverage phase's boundary values, then random ones. Every answer must
  be no 5xx, a documented status code and content type, match its documented schema,
  and invalid input must be rejected. The same runs again with INGEST_API_KEYS and
  READ_API_KEYS set: once with the right key in X-API-Key, once without any key, where
  every guarded operation must answer the documented 401.
* Hypothesis feeds arbitrary JSON and near-valid records (the samples and the crawler's
  examples, spoiled) to POST /metrics: every body is stored (201/422) or rejected with a
  4xx, never a 5xx, and what it says it stored is what reads back.

Note: schemathesis' lazy `schemathesis.pytest.from_fixture` fails on pytest 9.2
(`'Function' object has no attribute '_nodeid'`), so the schemas are loaded at import
from a throwaway app (its database is gone once the document is read) and every request
goes to the test's own app through `case.call(app=...)`. `test_loaded_documents_are_served`
holds the loaded documents to what the tested apps serve.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from typing import Any

import pytest
import samples
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import delete

import config
from gpumetrics import create_app
from gpumetrics.api.metrics import BATCH_EXAMPLE
from gpumetrics.db.tables import gpus, latest, records, rollups
from gpumetrics.kinds import FIELD_KINDS, KINDS, MEASURED_FIELDS
from gpumetrics.records import crawler
from gpumetrics.state import app_state

SEED = 20251201
INGEST_KEYS = ("fuzz-ingest-key", "fuzz-ingest-key-2")
READ_KEYS = ("fuzz-read-key",)
ERROR_KEYS = {"code", "status", "message", "errors"}
GUARDED = {
    ("GET", "/metrics/aggregate"),
    ("GET", "/metrics/series"),
    ("GET", "/metrics/latest"),
    ("GET", "/metrics/export"),
    ("GET", "/spans"),
    ("GET", "/spans/summary"),
    ("GET", "/processes"),
    ("POST", "/metrics"),
    ("GET", "/metrics"),
    ("GET", "/gpus"),
    ("GET", "/stats"),
    ("GET", "/prometheus"),
}

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
# The statuses with which this API rejects a request (documented per operation).
REJECTIONS = ["400", "401", "404", "405", "413", "415", "422"]

# Hypothesis settings for every generated test here: reproducible, no deadline (PostgreSQL
# and a cold SQLite file vary), and the function-scoped app is meant to persist between
# examples (the property test empties the database itself).
FUZZ = hsettings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],  # not `explain`: slow on a failure
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def _schemathesis_config(*, max_examples: int, coverage: bool, credentials: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "warnings": False,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "allow-x00": True,
                "with-security-parameters": credentials,
            },
            "phases": {"coverage": {"enabled": coverage}, "stateful": {"enabled": False}},
            "checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}},
        }
    )


def _load_document(*, max_examples: int, coverage: bool = True, credentials: bool = True, **changes: Any):
    """The OpenAPI document served by an app with these settings, as a schemathesis schema."""
    with tempfile.TemporaryDirectory() as folder:
        settings = config.load({"DATABASE_URL": f"sqlite:///{folder}/openapi.db"}).replace(**changes)
        app = create_app(settings)
        fuzz_config = _schemathesis_config(max_examples=max_examples, coverage=coverage, credentials=credentials)
        try:
            schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=fuzz_config)
            document = app.test_client().get("/openapi.json").get_json()
        finally:
            app_state(app).db.dispose()
    schema.app = None  # its database is gone: `_send` points every call at the test's own app
    return schema, document


OPEN, OPEN_DOCUMENT = _load_document(max_examples=60)
KEYED, KEYED_DOCUMENT = _load_document(
    max_examples=40, coverage=False, ingest_api_keys=INGEST_KEYS, read_api_keys=READ_KEYS
)
KEYLESS, _ = _load_document(
    max_examples=25, coverage=False, credentials=False, ingest_api_keys=INGEST_KEYS, read_api_keys=READ_KEYS
)


def _dispose(app) -> None:
    app_state(app).db.dispose()


def _send(case, app, **kwargs):
    """Send a generated case to `app` and run the checks; their own probes go to `app` too."""
    case.operation.app = case.operation.schema.app = app
    return case.call_and_validate(app=app, **kwargs)


@pytest.fixture
def seeded_app(app):
    """The app with the document's own request examples stored, so that reads have data."""
    client = app.test_client()
    for body in (BATCH_EXAMPLE, [crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE]):
        assert client.post("/metrics", json=body).status_code == 201
    return app


@pytest.fixture
def keyed_app(settings):
    app = create_app(settings.replace(ingest_api_keys=INGEST_KEYS, read_api_keys=READ_KEYS))
    client = app.test_client()
    stored = client.post("/metrics", json=BATCH_EXAMPLE, headers={"X-API-Key": INGEST_KEYS[0]})
    assert stored.status_code == 201
    yield app
    _dispose(app)


def test_loaded_documents_are_served(app, keyed_app):
    """The documents the fuzzers use are the ones the tested apps serve."""
    assert app.test_client().get("/openapi.json").get_json() == OPEN_DOCUMENT
    assert keyed_app.test_client().get("/openapi.json").get_json() == KEYED_DOCUMENT
    operations = {(method.upper(), path) for path, item in OPEN_DOCUMENT["paths"].items() for method in item}
    assert operations == GUARDED | {("GET", "/health")}


# ---- schemathesis: every operation, positive and negative -----------------------------


@OPEN.parametrize()
@FUZZ
def test_every_operation_conforms(case, seeded_app):
    _send(case, seeded_app, checks=CHECKS)


@KEYED.parametrize()
@FUZZ
def test_every_operation_conforms_with_keys(case, keyed_app):
    key = INGEST_KEYS[1] if case.method.upper() == "POST" else READ_KEYS[0]
    response = _send(case, keyed_app, headers={"X-API-Key": key}, checks=[*CHECKS, schemathesis.checks.ignored_auth])
    assert response.status_code != 401, f"the right key was refused: {response.text}"


@KEYLESS.parametrize()
@FUZZ
def test_guarded_operations_answer_401_without_key(case, keyed_app):
    assert not {"x-api-key", "authorization"} & {name.lower() for name in case.headers or {}}
    response = _send(case, keyed_app, checks=CHECKS)
    if (case.method.upper(), case.path) in GUARDED:
        assert response.status_code == 401, response.text
        assert response.headers.get("www-authenticate"), response.headers
        assert response.json()["code"] == 401
    else:
        assert response.status_code != 401


WRITES = OPEN["/metrics"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE)
READS = st.one_of(
    [
        OPEN[path]["GET"].as_strategy(generation_mode=mode)
        for path in ("/metrics", "/metrics/aggregate", "/gpus", "/stats")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
)


@hsettings(FUZZ, max_examples=60)
@given(writes=st.lists(WRITES, min_size=1, max_size=3), reads=st.lists(READS, min_size=1, max_size=4))
def test_reads_after_generated_writes(app, writes, reads):
    """Valid generated records, then generated reads over them: the reads see real data."""
    _empty(app)
    for case in [*writes, *reads]:
        _send(case, app, checks=CHECKS)


# ---- hypothesis: arbitrary JSON into the ingest pipeline --------------------------------


def _empty(app) -> None:
    with app_state(app).db.writing() as conn:
        for table in (records, rollups, latest, gpus):
            conn.execute(delete(table))


FIELD_NAMES = sorted(
    {f.name for kind in KINDS.values() for f in kind.fields}
    | {name for fields in crawler.FIELDS_BY_TYPE.values() for name in fields}
    | {"timestamp", "gpuIndex", "metric", "host", "uuid", "name", "hostname", "gpuId", "gpuName", "metricType"}
)
TIMESTAMPS = [
    "2025-12-01T18:51:30Z",
    "2025-12-01T18:51:30.123456+05:30",
    "2025-12-01 18:51:30",
    "2025-12-01",
    "2025-12-01T18:51:30.1234567Z",
    "2025-12-01T24:00:00Z",
    "2025-12-31T23:59:60Z",
    "2025-02-30T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",  # UTC is in year 0
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-00:01",  # UTC is in year 10000
    "2025-12-01T18:51:30+24:00",
    "2025-12-01T18:51:30Z\x00",
    "2025-12-01T18:51:30Z\x00trailing",
    "２０２５-12-01T18:51:30Z",
    "2025-12-01T18:51:30\ud800",
    "",
    "now",
]
NUMBERS = [
    0,
    -0.0,
    -1,
    100,
    100.0000001,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    10**30,
    10**400,
    0.5,
    5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    "1",
    "NaN",
    [1],
    {"value": 1},
]
TEXTS = [
    "trainer-01",
    "h2",
    "",
    " ",
    "unknown",
    "GPU-abc-uuid",
    "GPU-b",
    "'; DROP TABLE records; --",
    "a\x00b",
    "\ud800",
    "🎮",
    "\u202ertl",
    "x" * 255,
    "x" * 256,
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.sampled_from(NUMBERS[:20]),
    st.text(max_size=12),
    st.sampled_from(TEXTS + TIMESTAMPS),
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=12,
)


def _bases() -> list[dict]:
    out = [samples.record(metric) for metric in samples.FIELDS]
    out += [samples.record("process", host="trainer-01", uuid="GPU-b", name="A100", appName="x", scopeMemDeltaMiB=-3)]
    out += [samples.record("clocks", smMHz=1500)]
    out += [copy.deepcopy(crawler.GPU_EXAMPLE), copy.deepcopy(crawler.PROCESS_EXAMPLE)]
    out += [{**crawler.GPU_EXAMPLE, "graphicsClockMHz": 1410, "memClockMHz": 1215, "smClockMHz": 1400}]
    out += [{**crawler.GPU_EXAMPLE, "gpuId": "unknown", "gpuIndex": 0}]
    out += [{**crawler.PROCESS_EXAMPLE, "gpuIndex": 1}]
    return out


BASES = _bases()


@st.composite
def near_valid(draw) -> dict:
    """A valid record of either format with up to four fields spoiled, moved or dropped."""
    item = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(sorted(item) + FIELD_NAMES))
        action = draw(st.sampled_from(["drop", "number", "text", "timestamp", "identity", "any"]))
        if action == "drop":
            item.pop(key, None)
        elif action == "number":
            item[key] = draw(st.sampled_from(NUMBERS) | st.floats() | st.integers())
        elif action == "text":
            item[key] = draw(st.sampled_from(TEXTS) | st.text(max_size=300))
        elif action == "timestamp":
            item["timestamp"] = draw(st.sampled_from(TIMESTAMPS))
        elif action == "identity":
            # Few hosts, indexes and UUIDs, so that records of one body name the same GPUs.
            item[draw(st.sampled_from(["host", "hostname"]))] = draw(st.sampled_from(["trainer-01", "h2"]))
            item[draw(st.sampled_from(["uuid", "gpuId"]))] = draw(st.sampled_from(["GPU-abc-uuid", "GPU-b", "unknown"]))
            if draw(st.booleans()):
                item["gpuIndex"] = draw(st.integers(0, 2))
            else:
                item.pop("gpuIndex", None)
        else:
            item[key] = draw(JSON_VALUES)
    return item


ITEMS = st.one_of(near_valid(), near_valid(), near_valid(), JSON_VALUES)
BODIES = st.one_of(near_valid(), st.lists(ITEMS, min_size=0, max_size=8), JSON_VALUES)
RAW_BODIES = [
    b"",
    b"{",
    b"[1, 2",
    b'{"a": 1}{"b": 2}',
    b"\xff\xfe{}",
    b'{"timestamp": "\xff"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"metric": "memory", "totalMiB": 1' + b"0" * 5000 + b"}",
    b"NaN",
    b'"just a string"',
    b"null",
    b"\xef\xbb\xbf" + json.dumps(samples.record()).encode(),
    json.dumps(samples.record()).encode("utf-16"),
]


def _encode(body: Any) -> bytes:
    """JSON as Python writes it: NaN/Infinity literals, lone surrogates as \\ud800 escapes."""
    return json.dumps(body).encode()


def _records_made(item: dict) -> int:
    """How many canonical records one accepted input item becomes."""
    if "metricType" in item and "metric" not in item:
        if item["metricType"] == "gpu":
            return 4 + ("graphicsClockMHz" in item and "memClockMHz" in item)
        return 1
    return 1


def _strict_json(response) -> Any:
    """The body as JSON proper: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise AssertionError(f"{response.request.path}: {constant} in a JSON answer: {response.get_data()[:300]!r}")

    assert response.mimetype == "application/json", response.get_data()[:300]
    return json.loads(response.get_data(), parse_constant=refuse)


def _read_all(client) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {"limit": 10000, **({"cursor": cursor} if cursor else {})}
        response = client.get("/metrics", query_string=query)
        assert response.status_code == 200, response.get_data()[:500]
        page = _strict_json(response)
        items += page["items"]
        cursor = page["next"]
        if cursor is None:
            return items


def _aggregate_queries() -> list[dict]:
    queries = [{"aggregate": "count"}]
    for field in MEASURED_FIELDS:
        for metric in FIELD_KINDS[field] if len(FIELD_KINDS[field]) > 1 else [None]:
            for function in ("avg", "min", "max", "sum"):
                queries.append({"aggregate": function, "field": field, **({"metric": metric} if metric else {})})
    return queries


AGGREGATE_QUERIES = _aggregate_queries()


def _check_aggregate(client, query: dict) -> None:
    response = client.get("/metrics/aggregate", query_string=query)
    assert response.status_code == 200, (query, response.status_code, response.get_data()[:500])
    value = _strict_json(response)["value"]
    assert value is None or isinstance(value, int | float) and math.isfinite(value), (query, value)


def _check_ingest(app, data: bytes, aggregates: list[dict]) -> None:
    """POST `data` to an empty database; what it says it stored is what reads back."""
    _empty(app)
    client = app.test_client()
    response = client.post("/metrics", data=data, content_type="application/json")
    assert response.status_code < 500, f"{response.status_code} for {data[:300]!r}: {response.get_data()[:500]!r}"
    body = _strict_json(response)
    if response.status_code in (400, 413, 415):
        assert {"code", "status", "message"} <= set(body) <= ERROR_KEYS and body["code"] == response.status_code
        assert _read_all(client) == []
        return
    assert response.status_code in (201, 422), response.get_data()[:500]
    result_keys = {"stored", "duplicates", "rejected", "warnings"}
    if response.status_code == 201:
        assert set(body) == result_keys, body
    else:  # the ingest result, in the shape of every error answer too
        assert result_keys <= set(body) <= result_keys | ERROR_KEYS and body.get("code", 422) == 422, body
    items = json.loads(data)
    items = items if isinstance(items, list) else [items]
    rejected = [r["index"] for r in body["rejected"]]
    assert rejected == sorted(set(rejected)) and all(0 <= i < len(items) for i in rejected), body
    assert all(isinstance(r["errors"], dict) and r["errors"] for r in body["rejected"]), body
    assert (response.status_code == 422) == bool(rejected), body
    made = sum(_records_made(item) for i, item in enumerate(items) if i not in set(rejected))
    assert body["stored"] + body["duplicates"] == made, body
    stored = _read_all(client)
    assert len(stored) == body["stored"], (body, stored)
    for path in ("/gpus", "/stats"):
        read = client.get(path)
        assert read.status_code == 200, (path, read.get_data()[:500])
        _strict_json(read)
    for query in aggregates:
        _check_aggregate(client, query)


@hsettings(FUZZ, max_examples=200)
@given(body=BODIES, aggregate=st.sampled_from(AGGREGATE_QUERIES))
@example(body=BATCH_EXAMPLE, aggregate={"aggregate": "count"})
@example(body=[crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE, *BATCH_EXAMPLE], aggregate={"aggregate": "count"})
def test_any_json_is_stored_or_rejected(app, body, aggregate):
    data = _encode(body)
    note(f"POST /metrics body: {data[:3000]!r}")
    note(f"then GET /metrics?{aggregate}")
    _check_ingest(app, data, [aggregate])


def _two(metric: str, **fields) -> list[dict]:
    return [samples.record(metric, seconds=second, **fields) for second in (0, 1)]


KNOWN_BODIES = {
    # Found while writing these tests (the first two by test_any_json_is_stored_or_rejected,
    # the overflows by test_reads_after_generated_writes run with more examples); kept so
    # that every run tries them.
    "utc-before-year-1": samples.record("temperature", timestamp="0001-01-01T00:00:00+01:00"),
    "utc-after-year-9999": samples.record("temperature", timestamp="9999-12-31T23:59:59-01:00"),
    "largest-floats": _two("power", watts=1.7976931348623157e308),
    "most-negative-floats": _two("temperature", celsius=-1.7976931348623157e308),
    "largest-integers": _two("process", scopeMemDeltaMiB=2**63 - 1),
    "uuid-and-index-tied-in-one-batch": [
        # trainer-01's GPU known by UUID only (the crawler sends no index), then by index 0
        # alone, then a record ties the UUID to index 0: two GPUs become one mid-request.
        crawler.PROCESS_EXAMPLE,
        samples.record("temperature", host="trainer-01", gpu=0),
        samples.record("temperature", seconds=1, host="trainer-01", gpu=0, uuid=crawler.PROCESS_EXAMPLE["gpuId"]),
    ],
}


@pytest.mark.parametrize("body", KNOWN_BODIES.values(), ids=KNOWN_BODIES)
def test_known_bodies_are_stored_or_rejected(app, body):
    _check_ingest(app, _encode(body), AGGREGATE_QUERIES)


@pytest.mark.parametrize("data", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_raw_bodies_are_stored_or_rejected(app, data):
    _empty(app)
    response = app.test_client().post("/metrics", data=data, content_type="application/json")
    assert response.status_code in (201, 400, 413, 422), response.get_data()[:500]
    body = _strict_json(response)
    if response.status_code in (201, 422):
        assert len(_read_all(app.test_client())) == body["stored"]
    else:
        assert body["code"] == response.status_code
