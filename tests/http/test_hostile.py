"""Hostile input, the error format, API keys and CORS, on both databases.

* Text fields (`host`, `uuid`, `name`, and the crawler's `hostname`, `gpuId`, `gpuName`)
  with quotes, SQL, control characters, NUL, emoji, RTL marks, very long strings and lone
  surrogates are stored and read back exactly (GET /metrics, GET /gpus, the `host=` and
  `uuid=` filters), or rejected with a 4xx that names the field. Query parameters too.
* Every error answer is JSON {"code", "status", "message"[, "errors"]}, never HTML or a
  traceback; an unexpected exception is a 500 that carries a request id the log repeats.
* INGEST_API_KEYS / READ_API_KEYS: 401 with WWW-Authenticate without the right key, the
  key in X-API-Key or Authorization: Bearer, docs stay open, keys never logged.
* CORS: off by default; on for the listed origins only.
"""

from __future__ import annotations

import json
import logging

import pytest
from samples import record
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError
from werkzeug.http import HTTP_STATUS_CODES

import gpumetrics.store.queries
from gpumetrics import create_app
from gpumetrics.db.tables import gpus, latest, records, rollups
from gpumetrics.state import app_state

INGEST_KEYS = ("k1", "k2")
READ_KEYS = ("r1",)
ERROR_KEYS = {"code", "status", "message", "errors"}
CRAWLER_NAMES = {"host": "hostname", "uuid": "gpuId", "name": "gpuName"}

# Values that must be stored and read back exactly as sent.
KEPT = {
    "quotes": 'O\'Brien "the" `host`',
    "sql-drop": "'; DROP TABLE records; --",
    "sql-or": '" OR 1=1 --',
    "sql-like": "%_\\%",
    "html": "<script>alert(1)</script>&amp;",
    "controls": "a\x01\x07\x08\x1b[31m\x7fz",
    "whitespace": "\t line\nbreak\r ",
    "padded": "  host  ",
    "emoji": "🎮 GPU 🔥 𝕏",
    "rtl-override": "\u202egpu-txt.exe\u202c",
    "rtl-marks": "\u200f\u200e\u061c",
    "zero-width": "a\u200b\u200c\u200db\ufeff",
    "line-separators": "\x85\u2028\u2029",
    "noncharacter": "\ufffe\uffff\U0010ffff",
    "combining": "e\u0301\u0336\u0489",
    "longest-ascii": "h" * 255,
    "longest-emoji": "🎮" * 255,
}
# Values that must be rejected, naming the field.
REJECTED = {
    "nul": "a\x00b",
    "nul-only": "\x00",
    "nul-last": "host\x00",
    "lone-high-surrogate": "gpu\ud800",
    "lone-low-surrogate": "\udfffgpu",
    "reversed-surrogates": "\udc00\ud800",
    "too-long": "h" * 256,
    "too-long-emoji": "🎮" * 256,
}


def _app_with(settings, **changes):
    return create_app(settings.replace(**changes))


def _dispose(app) -> None:
    app_state(app).db.dispose()


@pytest.fixture
def keyed_app(settings):
    app = _app_with(settings, ingest_api_keys=INGEST_KEYS, read_api_keys=READ_KEYS)
    yield app
    _dispose(app)


def _post_raw(client, body, *, escaped: bool = True, **kwargs):
    """POST `body` as JSON text; `escaped` sends every non-ASCII character as a \\u escape."""
    data = json.dumps(body, ensure_ascii=escaped).encode("utf-8")
    return client.post("/metrics", data=data, content_type="application/json", **kwargs)


def _json(response) -> dict:
    assert response.mimetype == "application/json", (response.status_code, response.get_data()[:300])
    return json.loads(response.get_data())


def _assert_error(response, code: int) -> dict:
    """The one error shape: JSON with code/status/message (and maybe errors), no HTML, no traceback."""
    assert response.status_code == code, (response.status_code, response.get_data()[:500])
    text = response.get_data(as_text=True)
    assert "<html" not in text.lower() and "<!doctype" not in text.lower(), text[:300]
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    body = _json(response)
    assert {"code", "status", "message"} <= set(body) <= ERROR_KEYS, body
    assert body["code"] == code and isinstance(body["message"], str) and body["message"], body
    assert body["status"] == HTTP_STATUS_CODES[code], body
    assert response.headers.get("X-Request-ID"), dict(response.headers)
    return body


def _items(client, **query) -> list[dict]:
    response = client.get("/metrics", query_string=query)
    assert response.status_code == 200, response.get_data()[:500]
    return _json(response)["items"]


def _hostile_record(form: str, field: str, value: str) -> dict:
    if form == "canonical":
        return record("temperature", **{"host": "trainer-01", field: value})
    crawler = {
        "timestamp": "2025-12-01T18:00:00Z",
        "hostname": "trainer-01",
        "gpuId": "GPU-hostile",
        "gpuIndex": 0,
        "metricType": "process",
        "pid": 7,
        "processName": "python",
        "processUsedMemoryMiB": 1,
    }
    crawler[CRAWLER_NAMES[field]] = value
    return crawler


# ---- hostile text in records ----------------------------------------------------------


def _wipe(app) -> None:
    with app_state(app).db.writing() as conn:
        for table in (records, rollups, latest, gpus):
            conn.execute(delete(table))


FORMS = [(field, form) for field in ("host", "uuid", "name") for form in ("canonical", "crawler")]


@pytest.mark.parametrize("value", KEPT.values(), ids=KEPT)
def test_hostile_text_is_stored_exactly(app, value):
    client = app.test_client()
    for field, form in FORMS:
        for escaped in (True, False):
            case = f"{field} in the {form} format, " + ("as \\u escapes" if escaped else "as UTF-8")
            _wipe(app)
            response = _post_raw(client, _hostile_record(form, field, value), escaped=escaped)
            assert response.status_code == 201, (case, response.get_data()[:800])
            assert _json(response)["stored"] == 1, case

            (item,) = _items(client)
            assert item[field].encode("utf-8") == value.encode("utf-8"), (case, item[field])
            (gpu,) = _json(client.get("/gpus"))["gpus"]
            assert gpu[field].encode("utf-8") == value.encode("utf-8"), (case, gpu[field])
            if field == "name":
                continue
            assert _items(client, **{field: value}) == [item], case
            (stats,) = _json(client.get("/stats", query_string={field: value}))["gpus"]
            assert stats[field] == value, case
            near = value[:-1] if len(value) > 1 else value + "x"  # one character off: no match
            assert _items(client, **{field: near}) == [], case
            count = _json(client.get("/metrics/aggregate", query_string={field: value, "aggregate": "count"}))
            assert count["count"] == 1, case


@pytest.mark.parametrize("value", REJECTED.values(), ids=REJECTED)
def test_unstorable_text_is_rejected_naming_the_field(client, value):
    for field, form in FORMS:
        case = f"{field} in the {form} format"
        response = _post_raw(client, _hostile_record(form, field, value))  # lone surrogates as \ud800 escapes
        assert response.status_code == 422, (case, response.get_data()[:800])
        body = _json(response)
        assert body["stored"] == 0 and [r["index"] for r in body["rejected"]] == [0], (case, body)
        named = field if form == "canonical" else CRAWLER_NAMES[field]
        assert named in body["rejected"][0]["errors"], (case, body)
        assert _items(client) == [], case
        assert _json(client.get("/gpus"))["gpus"] == [], case


@pytest.mark.parametrize("field", ["processName", "appName", "kernelName", "tag"])
def test_hostile_process_text_is_stored_exactly_or_rejected(app, field):
    client = app.test_client()
    for name, value in KEPT.items():
        _wipe(app)
        response = _post_raw(client, record("process", **{field: value}))
        assert response.status_code == 201, (name, response.get_data()[:500])
        (item,) = _items(client)
        assert item[field] == value, name
    for name, value in REJECTED.items():
        if name.startswith("too-long"):
            continue  # free text is cut to 65,536 characters, not rejected: tests/records/test_real_crawler.py
        response = _post_raw(client, record("process", seconds=1, **{field: value}))
        assert response.status_code == 422 and field in _json(response)["rejected"][0]["errors"], name


def test_hostile_text_in_a_batch_rejects_only_its_record(client):
    batch = [record("memory", host="ok-1"), record("memory", host="bad\x00"), record("memory", host="🎮")]
    response = _post_raw(client, batch)
    assert response.status_code == 422
    body = _json(response)
    assert body["stored"] == 2 and body["rejected"][0]["index"] == 1 and "host" in body["rejected"][0]["errors"]
    assert sorted(item["host"] for item in _items(client)) == sorted(["ok-1", "🎮"])


def test_unpaired_surrogate_in_a_field_name_or_unknown_field_is_harmless(client):
    data = json.dumps(record("power", tag="x")).encode()[:-1] + b', "\\ud800": "\\udfff"}'
    response = client.post("/metrics", data=data, content_type="application/json")
    assert response.status_code == 201, response.get_data()[:500]
    assert len(_items(client)) == 1


@pytest.mark.parametrize(
    "timestamp", ["2025-12-01T18:51:30Z\x00junk", "2025-12-01T18:51:30\x00", "\x002025-12-01T18:51:30Z"]
)
def test_timestamp_with_nul_is_rejected(client, timestamp):
    response = _post_raw(client, record("memory", timestamp=timestamp))
    assert response.status_code == 422, response.get_data()[:500]
    assert "timestamp" in _json(response)["rejected"][0]["errors"]
    body = _assert_error(client.get("/metrics", query_string={"start": timestamp}), 422)
    assert "start" in body["errors"]["query"]


def test_hosts_that_differ_only_slightly_are_different_gpus(client):
    hosts = ["node", "Node", "node ", " node", "nöde", "no\u0308de", "node\u200b"]
    response = _post_raw(client, [record("memory", host=host) for host in hosts])
    assert response.status_code == 201, response.get_data()[:500]
    assert sorted(gpu["host"] for gpu in _json(client.get("/gpus"))["gpus"]) == sorted(hosts)
    for host in hosts:
        (item,) = _items(client, host=host)
        assert item["host"] == host


# ---- hostile query parameters ---------------------------------------------------------


QUERIES = [(path, name) for path in ("/metrics", "/stats") for name in ("host", "uuid")]


@pytest.mark.parametrize("value", ["a\x00b", "\x00", "x" * 256], ids=["nul", "nul-only", "too-long"])
def test_query_text_that_cannot_match_is_422_naming_it(client, value):
    client.post("/metrics", json=record("memory", host="trainer-01", uuid="GPU-1"))
    for path, name in QUERIES:
        body = _assert_error(client.get(path, query_string={name: value}), 422)
        assert name in body["errors"]["query"], (path, body)


NO_MATCH = {**{k: v for k, v in KEPT.items() if not k.startswith("longest")}, "star": "*", "percent": "%"}


@pytest.mark.parametrize("value", NO_MATCH.values(), ids=NO_MATCH)
def test_query_text_with_quotes_or_sql_just_does_not_match(client, value):
    assert client.post("/metrics", json=record("memory", host="trainer-01", uuid="GPU-1")).status_code == 201
    for path, name in QUERIES:
        response = client.get(path, query_string={name: value})
        assert response.status_code == 200, (path, name, response.get_data()[:500])
        assert _json(response)[{"/metrics": "items", "/stats": "gpus"}[path]] == [], (path, name)
    assert len(_items(client)) == 1  # and the table is still there


@pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "%C0%80", "%F4%90%80%80", "%E2%80"])
def test_query_bytes_that_are_not_utf8_are_no_server_error(client, raw):
    client.post("/metrics", json=record("memory", host="trainer-01"))
    response = client.get(f"/metrics?host={raw}")
    assert response.status_code in (200, 422), response.get_data()[:500]
    if response.status_code == 200:
        assert _json(response)["items"] == []
    else:
        assert "host" in _assert_error(response, 422)["errors"]["query"]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "\x00",
        "YXNjOjE6MQ==" * 30,  # longer than a cursor may be
        "YXNjOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OjE",  # asc:99999999999999999999999:1
        "YXNjOjE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk",  # asc:1:99999999999999999999999
        "YXNjOi05OTk5OTk5OTk5OTk5OTk5OTk5OTk5OjE",  # asc:-99999999999999999999999:1
        "ZGVzYzoxOjE",  # desc:1:1 with order=asc
        "YXNjOjE6MTox",  # asc:1:1:1
        "YXNjOuS4gDox",  # asc:<non-ASCII digit>:1
    ],
)
def test_bad_cursors_are_422(client, cursor):
    client.post("/metrics", json=[record("memory", seconds=s) for s in range(3)])
    body = _assert_error(client.get("/metrics", query_string={"cursor": cursor, "limit": 1}), 422)
    assert "cursor" in body["errors"]["query"], body


@pytest.mark.parametrize(
    "query",
    [
        {"gpuIndex": 2**31},
        {"gpuIndex": -1},
        {"gpuIndex": "1e3"},
        {"gpuIndex": 10**30},
        {"limit": 0},
        {"limit": 10001},
        {"limit": "NaN"},
        {"start": "0000-01-01T00:00:00Z"},
        {"end": "2025-13-01"},
        {"metric": "memory'--"},
        {"aggregate": "avg", "field": "totalMiB; DROP TABLE records"},
    ],
    ids=repr,
)
def test_query_parameters_out_of_range_are_422(client, query):
    body = _assert_error(client.get("/metrics", query_string=query), 422)
    assert set(query) & set(body["errors"]["query"]), (query, body)


# ---- the error format ---------------------------------------------------------------


def test_unknown_path_is_404_json(client):
    for path in ("/nope", "/metrics/", "/metrics/1", "/static/../config.py", "/METRICS"):
        _assert_error(client.get(path), 404)


def test_wrong_method_is_405_json_with_allow(client):
    for method, path in (("PUT", "/metrics"), ("DELETE", "/metrics"), ("PATCH", "/gpus"), ("POST", "/health")):
        response = client.open(path, method=method, json={})
        _assert_error(response, 405)
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
        assert {"GET"} <= allowed, (method, path, dict(response.headers))


def test_body_too_large_is_413_json(settings):
    app = _app_with(settings, max_body_bytes=1024)
    try:
        client = app.test_client()
        big = [record("memory", seconds=i) for i in range(20)]
        assert len(json.dumps(big)) > 1024
        _assert_error(client.post("/metrics", json=big), 413)
        assert _items(client) == []
    finally:
        _dispose(app)


def test_too_many_records_is_413_json(settings):
    app = _app_with(settings, max_batch=2)
    try:
        client = app.test_client()
        body = _assert_error(client.post("/metrics", json=[record("memory", seconds=i) for i in range(3)]), 413)
        assert "MAX_BATCH" in body["message"]
        assert client.post("/metrics", json=[record("memory", seconds=i) for i in range(2)]).status_code == 201
    finally:
        _dispose(app)


@pytest.mark.parametrize(
    "content_type,data",
    [
        ("text/plain", b"{}"),
        ("application/x-www-form-urlencoded", b"timestamp=2025-12-01"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/xml", b"<records/>"),
        (None, b"{}"),
    ],
)
def test_not_json_is_415_json(client, content_type, data):
    kwargs = {"content_type": content_type} if content_type else {}
    _assert_error(client.post("/metrics", data=data, **kwargs), 415)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{'single': 'quotes'}", b"[1,]", b"\xff\xfe\xfd", b"12", b'"text"', b"null", b"[" * 50_000],
    ids=["empty", "truncated", "single-quotes", "trailing-comma", "not-utf8", "number", "string", "null", "deep"],
)
def test_malformed_json_is_400_json(client, data):
    body = _assert_error(client.post("/metrics", data=data, content_type="application/json"), 400)
    assert "Traceback" not in body["message"]


def test_unauthorized_is_401_json(keyed_app):
    response = keyed_app.test_client().post("/metrics", json=record())
    _assert_error(response, 401)
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")


def test_invalid_query_is_422_json_naming_the_parameter(client):
    body = _assert_error(client.get("/metrics", query_string={"limit": 0, "order": "sideways"}), 422)
    assert {"limit", "order"} <= set(body["errors"]["query"]), body


def test_unexpected_exception_is_500_json_with_a_request_id_the_log_repeats(client, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(gpumetrics.store.queries, "gpu_list", explode)
    caplog.set_level(logging.DEBUG)
    response = client.get("/gpus")
    body = _assert_error(response, 500)
    request_id = response.headers["X-Request-ID"]
    assert request_id in body["message"], body
    assert "boom" not in response.get_data(as_text=True) and "RuntimeError" not in response.get_data(as_text=True)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    logged = [r for r in errors if request_id in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    (first,) = logged
    assert first.exc_info and first.exc_info[0] is RuntimeError, first.exc_info
    assert "boom: secret internals" in caplog.text and "Traceback" in caplog.text
    # Nothing else went wrong on the way: every error logged for the request names it.
    strays = [(r.name, r.getMessage(), r.exc_info and r.exc_info[1]) for r in errors if r not in logged]
    assert not strays, f"errors logged without the request id {request_id}: {strays}"


def test_caller_request_id_is_kept_when_safe(client, monkeypatch, caplog):
    monkeypatch.setattr(gpumetrics.store.queries, "gpu_list", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    caplog.set_level(logging.ERROR)
    response = client.get("/gpus", headers={"X-Request-ID": "trace-42.a_b-C"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "trace-42.a_b-C"
    assert "trace-42.a_b-C" in _json(response)["message"]
    assert any("trace-42.a_b-C" in r.getMessage() for r in caplog.records)
    for hostile in ("x" * 65, "a b", "a\tb", "ä", "<script>", "../../x", "%0d%0a"):
        answered = client.get("/health", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert answered != hostile and len(answered) == 32, (hostile, answered)


def test_database_error_is_503_json_with_retry_after(client, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(gpumetrics.store.queries, "gpu_list", down)
    response = client.get("/gpus")
    _assert_error(response, 503)
    assert response.headers.get("Retry-After")
    assert "connection refused" not in response.get_data(as_text=True)


def test_every_answer_says_nosniff_and_carries_a_request_id(client):
    for response in (client.get("/health"), client.get("/nope"), client.put("/metrics"), client.get("/openapi.json")):
        assert response.headers.get("X-Content-Type-Options") == "nosniff"
        assert response.headers.get("X-Request-ID")


# ---- API keys -----------------------------------------------------------------------


READS = ["/metrics", "/gpus", "/stats", "/metrics/aggregate?aggregate=count"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-API-Key": "k"},
        {"X-API-Key": "k1k1"},
        {"X-API-Key": "K1"},
        {"X-API-Key": "r1"},  # a read key does not ingest
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic k1"},
        {"Authorization": "k1"},
        {"Authorization": "Token k1"},
    ],
    ids=lambda h: repr(h),
)
def test_ingest_without_the_right_key_is_401(keyed_app, headers):
    client = keyed_app.test_client()
    response = client.post("/metrics", json=record(), headers=headers)
    _assert_error(response, 401)
    assert response.headers.get("WWW-Authenticate")
    assert _json(client.get("/metrics", headers={"X-API-Key": "r1"}))["items"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "k1"},
        {"X-API-Key": "k2"},
        {"Authorization": "Bearer k1"},
        {"Authorization": "Bearer k2"},
        {"Authorization": "bearer k1"},
        {"X-API-Key": "", "Authorization": "Bearer k2"},
    ],
    ids=lambda h: repr(h),
)
def test_ingest_with_a_right_key_is_201(keyed_app, headers):
    client = keyed_app.test_client()
    response = client.post("/metrics", json=record(), headers=headers)
    assert response.status_code == 201, response.get_data()[:500]
    assert len(_json(client.get("/metrics", headers={"Authorization": "Bearer r1"}))["items"]) == 1


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_read_key(keyed_app, path):
    client = keyed_app.test_client()
    assert client.post("/metrics", json=record(), headers={"X-API-Key": "k1"}).status_code == 201
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "k1"}, {"Authorization": "Bearer k2"}):
        response = client.get(path, headers=headers)
        _assert_error(response, 401)
        assert response.headers.get("WWW-Authenticate")
    for headers in ({"X-API-Key": "r1"}, {"Authorization": "Bearer r1"}):
        assert client.get(path, headers=headers).status_code == 200


@pytest.mark.parametrize("path", READS)
def test_head_is_a_read_too(keyed_app, path):
    """HEAD runs the GET view: without a read key it must not answer 200 (nor its Content-Length)."""
    client = keyed_app.test_client()
    assert client.post("/metrics", json=record(host="secret-host"), headers={"X-API-Key": "k1"}).status_code == 201
    response = client.head(path)
    assert response.status_code == 401, (path, response.status_code, dict(response.headers))
    assert client.head(path, headers={"X-API-Key": "r1"}).status_code == 200


def test_health_without_read_key_says_only_up(keyed_app):
    client = keyed_app.test_client()
    response = client.get("/health")
    assert response.status_code == 200 and _json(response) == {"status": "ok"}
    assert _json(client.get("/health", headers={"X-API-Key": "wrong"})) == {"status": "ok"}
    detailed = _json(client.get("/health", headers={"X-API-Key": "r1"}))
    assert detailed["status"] == "ok" and detailed["database"] == "ok" and "version" in detailed


def test_docs_and_openapi_stay_readable_without_keys(keyed_app):
    client = keyed_app.test_client()
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert client.get("/").status_code in (301, 302, 308)


def test_openapi_declares_the_keys(keyed_app, settings):
    document = _json(keyed_app.test_client().get("/openapi.json"))
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"].lower() == "bearer"
    for path, method in (("/metrics", "post"), ("/metrics", "get"), ("/gpus", "get"), ("/stats", "get")):
        operation = document["paths"][path][method]
        assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], (path, method)
        assert "401" in operation["responses"], (path, method)
    assert document["paths"]["/health"]["get"].get("security", []) == []

    ingest_only = _app_with(settings, ingest_api_keys=INGEST_KEYS)
    try:
        document = _json(ingest_only.test_client().get("/openapi.json"))
        assert document["paths"]["/metrics"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
        for path in ("/metrics", "/gpus", "/stats"):
            assert document["paths"][path]["get"].get("security", []) == [], path
            assert "401" not in document["paths"][path]["get"]["responses"], path
        assert ingest_only.test_client().get("/gpus").status_code == 200
    finally:
        _dispose(ingest_only)


def test_keys_never_appear_in_logs(settings, monkeypatch, caplog):
    secret_ingest, secret_read, wrong = "ingest-SECRET-7f3a", "read-SECRET-91bc", "wrong-SECRET-0d2e"
    caplog.set_level(logging.DEBUG)
    app = _app_with(settings, ingest_api_keys=(secret_ingest,), read_api_keys=(secret_read,))
    try:
        client = app.test_client()
        for headers in ({"X-API-Key": wrong}, {"Authorization": f"Bearer {wrong}"}, {"X-API-Key": secret_ingest}):
            response = client.post("/metrics", json=record(), headers=headers)
            assert wrong not in response.get_data(as_text=True)
        for headers in ({"X-API-Key": wrong}, {"X-API-Key": secret_read}, {"Authorization": f"Bearer {secret_read}"}):
            client.get("/metrics", headers=headers)
            client.get("/health", headers=headers)
        monkeypatch.setattr(
            gpumetrics.store.queries, "gpu_list", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
        )
        assert client.get("/gpus", headers={"X-API-Key": secret_read}).status_code == 500
    finally:
        _dispose(app)
    assert caplog.records, "expected some logging"
    for secret in (secret_ingest, secret_read, wrong):
        assert secret not in caplog.text, secret
        for log_record in caplog.records:
            assert secret not in log_record.getMessage() and secret not in repr(log_record.args), log_record


# ---- CORS ---------------------------------------------------------------------------


ORIGIN = "https://a.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type, x-api-key",
}


def test_cors_is_off_by_default(client):
    for response in (
        client.get("/metrics", headers={"Origin": ORIGIN}),
        client.post("/metrics", json=record(), headers={"Origin": ORIGIN}),
        client.options("/metrics", headers=PREFLIGHT),
    ):
        assert not any(name.lower().startswith("access-control-") for name in response.headers.keys())


def test_cors_allows_only_the_listed_origin(settings):
    app = _app_with(settings, cors_origins=(ORIGIN,), ingest_api_keys=INGEST_KEYS)
    try:
        client = app.test_client()
        response = client.get("/metrics", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Origin" in response.headers.get("Vary", "")
        assert "X-Request-ID" in response.headers.get("Access-Control-Expose-Headers", "")

        preflight = client.options("/metrics", headers=PREFLIGHT)
        assert preflight.status_code in (200, 204), preflight.status_code  # a preflight carries no key
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        methods = {m.strip().upper() for m in preflight.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST"} <= methods
        allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-api-key", "authorization"} <= allowed

        refused = client.post("/metrics", json=record(), headers={"Origin": ORIGIN})
        _assert_error(refused, 401)  # the browser app can read why
        assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN

        for other in ("https://b.example", "https://a.example.evil.test", "http://a.example", "null", "*"):
            for response in (
                client.get("/metrics", headers={"Origin": other}),
                client.options("/metrics", headers={**PREFLIGHT, "Origin": other}),
            ):
                assert not any(n.lower().startswith("access-control-") for n in response.headers.keys()), other
    finally:
        _dispose(app)
