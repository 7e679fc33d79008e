"""Every operator mistake gets a true, one-line answer: queries that say what they did,
messages that are true, limits named with their settings, compressed bodies."""

from __future__ import annotations

import gzip
import json
import logging
import resource
import zlib

import pytest
from samples import record
from werkzeug.datastructures import MultiDict

READS = ["/metrics", "/metrics/aggregate?aggregate=count", "/gpus", "/stats"]
WINDOWED = ["/metrics", "/metrics/aggregate?aggregate=count", "/stats"]


def _query(path: str, **params) -> tuple[str, dict]:
    base, _, fixed = path.partition("?")
    query = dict(part.split("=") for part in fixed.split("&") if part)
    return base, {**query, **params}


@pytest.fixture
def fleet(client):
    batch = [
        record("power", s, gpu, host=host, uuid=f"GPU-{host}-{gpu}") for host in "ab" for gpu in (0, 1) for s in (0, 1)
    ]
    assert client.post("/metrics", json=batch).status_code == 201
    return client


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("wrong", ["gpuindex", "gpu", "hosts"])
def test_an_unknown_parameter_is_422_naming_it_and_what_is_accepted(fleet, path, wrong):
    base, params = _query(path, **{wrong: "3"})
    answer = fleet.get(base, query_string=params)
    assert answer.status_code == 422
    (message,) = answer.get_json()["errors"]["query"][wrong]
    assert "Unknown parameter; accepted:" in message and "host" in message and "gpuIndex" in message
    assert f"{wrong}='3'" in answer.get_json()["message"]


@pytest.mark.parametrize("path", READS)
def test_the_crawlers_names_are_aliases_on_every_read(fleet, path):
    base, params = _query(path)
    by_name = fleet.get(base, query_string={**params, "host": "a", "uuid": "GPU-a-1"}).get_json()
    by_alias = fleet.get(base, query_string={**params, "hostname": "a", "gpuId": "GPU-a-1"}).get_json()
    assert by_name == by_alias
    everything = fleet.get(base, query_string=params).get_json()
    assert by_alias != everything, "the alias filtered"
    both = fleet.get(base, query_string={**params, "host": "a", "hostname": "b"})
    assert both.status_code == 422 and "hostname" in both.get_json()["errors"]["query"]


@pytest.mark.parametrize("path", READS)
def test_a_one_value_parameter_given_twice_is_422(fleet, path):
    base, params = _query(path)
    answer = fleet.get(base, query_string=MultiDict([*params.items(), ("host", "a"), ("host", "b")]))
    assert answer.status_code == 422
    assert answer.get_json()["errors"]["query"]["host"] == ["Given 2 times; takes one value. Got host=['a', 'b']."]


@pytest.mark.parametrize("path", WINDOWED)
def test_start_after_end_is_422_on_every_endpoint_that_takes_both(fleet, path):
    base, params = _query(path, start="2025-12-01T19:00:00Z", end="2025-12-01T18:00:00Z")
    answer = fleet.get(base, query_string=params)
    assert answer.status_code == 422 and "start" in answer.get_json()["errors"]["query"]
    same = fleet.get(base, query_string={**params, "end": params["start"]})
    assert same.status_code == 200


def test_gpus_take_the_host_uuid_and_index_filters(fleet):
    def listed(**params):
        return [(g["host"], g["gpuIndex"]) for g in fleet.get("/gpus", query_string=params).get_json()["gpus"]]

    assert listed() == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert listed(host="b") == [("b", 0), ("b", 1)]
    assert listed(gpuIndex=1) == [("a", 1), ("b", 1)]
    assert listed(uuid="GPU-b-0") == [("b", 0)]
    assert listed(host="a", gpuIndex=0) == [("a", 0)]


def test_a_query_422_names_the_parameter_and_the_value_it_got(client):
    answer = client.get("/metrics", query_string={"gpuIndex": "three"})
    assert answer.status_code == 422
    assert answer.get_json()["errors"]["query"]["gpuIndex"] == ["Not a valid integer. Got gpuIndex='three'."]
    assert (
        answer.get_json()["message"] == "Invalid query parameter gpuIndex: Not a valid integer. Got gpuIndex='three'."
    )


def test_a_partial_store_says_how_many_were_stored_and_rejected(client, caplog):
    with caplog.at_level(logging.WARNING, logger="gpumetrics.api.metrics"):
        answer = client.post("/metrics", json=[record("power", 1), record("power", 2), record("power", 3, watts=-1)])
    assert answer.status_code == 422 and answer.get_json()["message"] == "2 of 3 records stored; 1 rejected"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gpumetrics.api.metrics"]
    assert (
        line
        == "POST /metrics from 127.0.0.1: 1 of 3 records rejected; first: record 2: watts: Must be from 0 to 1e+15."
    )
    none = client.post("/metrics", json=[record("power", watts="x"), {"metric": "power"}]).get_json()
    assert none["message"] == "0 of 2 records stored; 2 rejected" and none["stored"] == 0


def _raw(client, text: str):
    return client.post("/metrics", data=text, content_type="application/json")


def test_numbers_beyond_range_get_plain_words_not_python_hints(client):
    infinite = _raw(client, json.dumps(record("power")).replace('"watts": 165.5', '"watts": 1e400'))
    assert infinite.get_json()["rejected"][0]["errors"] == {"watts": ["Not a finite number."]}
    huge = _raw(client, json.dumps(record("power")).replace('"gpuIndex": 0', '"gpuIndex": ' + "9" * 5000))
    assert huge.status_code == 422
    assert huge.get_json()["rejected"][0]["errors"] == {"gpuIndex": ["Out of range."]}
    assert "sys." not in huge.get_data(as_text=True) and "digits" not in huge.get_data(as_text=True)
    float_field = _raw(client, json.dumps(record("power")).replace('"watts": 165.5', '"watts": ' + "9" * 5000))
    assert float_field.get_json()["rejected"][0]["errors"] == {"watts": ["Out of range."]}


def test_413_names_the_limit_and_its_setting(make_app):
    client = make_app(max_body_bytes=4096, max_batch=3).test_client()
    too_big = _raw(client, json.dumps([record("power", s) for s in range(100)]))
    assert too_big.status_code == 413
    assert too_big.get_json()["message"] == "The body is larger than MAX_BODY_BYTES=4096 bytes."
    too_many = client.post("/metrics", json=[record("power", s) for s in range(4)])
    assert too_many.status_code == 413
    assert too_many.get_json()["message"] == "At most 3 records per request (MAX_BATCH=3); this one has 4."


def test_a_gzip_body_is_decompressed_and_stored(client):
    body = gzip.compress(json.dumps([record("power", s) for s in range(50)]).encode())
    answer = client.post("/metrics", data=body, content_type="application/json", headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 201 and answer.get_json()["stored"] == 50


def _bomb(gigabytes: int) -> bytes:
    """gzip of `gigabytes` GiB of spaces, made a MiB at a time (about 1 MiB per GiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    return b"".join(packer.compress(block) for _ in range(gigabytes << 10)) + packer.flush()


def test_a_zip_bomb_gets_413_after_reading_at_most_the_limit(client):
    bomb = _bomb(2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = client.post("/metrics", data=bomb, content_type="application/json", headers={"Content-Encoding": "gzip"})
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert answer.status_code == 413
    assert answer.get_json()["message"] == "The body, decompressed, is larger than MAX_BODY_BYTES=16777216 bytes."
    assert grown_mib < 100, f"decompressing grew the process by {grown_mib:.0f} MiB"


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd"])
def test_another_encoding_gets_415_naming_it(client, encoding):
    answer = client.post(
        "/metrics", data=b"{}", content_type="application/json", headers={"Content-Encoding": encoding}
    )
    assert answer.status_code == 415 and repr(encoding) in answer.get_json()["message"]
