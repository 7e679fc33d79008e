"""End to end: the real gunicorn command, as the Dockerfile and `make serve` run it."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import GUNICORN, ROOT, wait_for
from samples import FIELDS, record

import config

pytestmark = pytest.mark.slow


def test_gunicorn_with_two_workers_stores_and_answers(gunicorn):
    server = gunicorn(WORKERS="2")
    batch = [record(kind, second, gpu) for kind in FIELDS for second in range(50) for gpu in range(2)]
    with requests.Session() as http:
        answers = [
            http.post(server.url + "/metrics", json=batch[i : i + 100], timeout=30) for i in range(0, len(batch), 100)
        ]
        assert [a.status_code for a in answers] == [201] * len(answers)
        assert sum(a.json()["stored"] for a in answers) == len(batch)
        again = http.post(server.url + "/metrics", json=batch[:100], timeout=30).json()
        assert again == {"stored": 0, "duplicates": 100, "rejected": [], "warnings": []}
        items, cursor = [], None
        while True:
            page = http.get(
                server.url + "/metrics", params={"limit": 250, **({"cursor": cursor} if cursor else {})}, timeout=30
            ).json()
            items += page["items"]
            cursor = page["next"]
            if not cursor:
                break
        key = lambda r: (r["timestamp"], r["gpuIndex"], r["metric"])  # noqa: E731
        assert sorted(items, key=key) == sorted(batch, key=key)
        assert [g["gpuIndex"] for g in http.get(server.url + "/gpus", timeout=30).json()["gpus"]] == [0, 1]
        assert http.get(server.url + "/docs", timeout=30).status_code == 200
        assert (
            http.post(
                server.url + "/metrics", data="{", headers={"Content-Type": "application/json"}, timeout=30
            ).status_code
            == 400
        )
    log = server.log.read_text()
    assert "Traceback" not in log
    assert len(re.findall(r"Booting worker", log)) == 2


def test_dockerfile_and_make_serve_run_the_tested_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert cmd == ["gunicorn", *GUNICORN[3:]]
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/gunicorn " + " ".join(GUNICORN[3:]) in makefile


def test_concurrent_posts_that_introduce_the_same_new_gpus(gunicorn):
    server = gunicorn(WORKERS="2")
    bodies = [[record("power", n, gpu=g, host=f"h{g % 3}") for g in range(6)] for n in range(40)]

    def send(body):
        with requests.Session() as http:
            return http.post(server.url + "/metrics", json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, bodies))
    assert statuses == [201] * len(bodies)
    gpus = requests.get(server.url + "/gpus", timeout=10).json()["gpus"]
    assert sorted((g["host"], g["gpuIndex"]) for g in gpus) == sorted((f"h{g % 3}", g) for g in range(6))
    count = requests.get(server.url + "/metrics", params={"aggregate": "count"}, timeout=10).json()["value"]
    assert count == 240


def test_dockerfile_runs_as_a_numeric_non_root_user_with_its_files_in_volumes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001(:10001)?$", dockerfile, re.MULTILINE), "numeric, so runAsNonRoot can check it"
    block = dockerfile.split("\nENV ", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    env = dict(item.split("=", 1) for item in block.split())
    env.pop("PYTHONDONTWRITEBYTECODE"), env.pop("PYTHONUNBUFFERED")
    assert set(env) <= {setting.env for setting in config.SETTINGS}, "only settings the service reads"
    assert env["HOST"] == "0.0.0.0" and env["DATABASE_URL"] == "sqlite:////data/metrics.db"
    assert env["INPUT_WS_PATH"].startswith("/input/") and env["INPUT_MSG_PATH"].startswith("/input/")
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, re.MULTILINE)
    probe = re.search(r'CMD python -c "(.*)"$', dockerfile, re.MULTILINE).group(1)
    compile(probe, "HEALTHCHECK", "exec")
    assert "HOST" in probe and "PORT" in probe


def send_head_and_part(url: str, body: bytes, part: int) -> socket.socket:
    """A POST whose body has only `part` bytes sent so far: a request in flight."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body[:part])
    return conn


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the same stop on PostgreSQL
def test_sigterm_lets_requests_in_flight_finish_and_stops_within_docker_stops_10_s(gunicorn):
    """`docker stop`: SIGTERM, then SIGKILL 10 s later. One request finishes after the
    SIGTERM; one never does, and the stop still ends well inside the 10 s. HOST is the
    address gunicorn listens on."""
    server = gunicorn(WORKERS="1", HOST="127.0.0.1")
    assert f"Listening at: http://127.0.0.1:{server.port} " in server.log.read_text()
    body = json.dumps([record("power", second) for second in range(50)]).encode()
    with send_head_and_part(server.url, body, 100) as finishing, send_head_and_part(server.url, body, 10):
        time.sleep(0.5)  # both are in the worker's hands
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        finishing.sendall(body[100:])
        assert finishing.recv(4096).startswith(b"HTTP/1.1 201 "), "the request in flight is answered"
        server.process.wait(timeout=30)
    assert time.monotonic() - stopped < 9.5, "gunicorn must be done before docker's SIGKILL"
    assert server.process.returncode == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the HTTP layer alone
def test_keep_alive_clients_that_connect_at_once_are_spread_over_the_workers(gunicorn):
    """Crawlers keep their connection; were they all on one worker, one core would serve them.
    Four busy clients connect together, three times over: each worker gets two."""
    server = gunicorn(WORKERS="2")
    server.wait_workers(2)
    for _ in range(3):
        wait_for(lambda: not server.client_sockets())  # the workers hold no connection
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(4)]
        start = threading.Barrier(4)

        def busy(conn, start=start) -> None:
            start.wait()
            for _ in range(50):
                conn.request("GET", "/health")
                conn.getresponse().read()

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(busy, conns))
        owners = server.owners([conn.sock.getsockname()[1] for conn in conns])
        for conn in conns:
            conn.close()
        assert 0 not in owners and sorted(Counter(owners).values()) == [2, 2], owners


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the HTTP layer alone
def test_a_worker_held_by_a_long_request_leaves_new_connections_to_the_others(gunicorn):
    """THREADS=1: a worker whose one thread waits on a slow client answers nothing else. New
    connections go to the other worker, although it already holds more connections."""
    server = gunicorn(WORKERS="2", THREADS="1")
    server.wait_workers(2)
    body = json.dumps([record("power", second) for second in range(50)]).encode()
    with send_head_and_part(server.url, body, 100) as slow:
        wait_for(lambda: len(server.client_sockets()) == 1)
        (held_by,) = server.owners([slow.getsockname()[1]])
        time.sleep(1.0)  # its worker has been busy for a while
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(4)]
        for conn in conns:  # kept open: the other worker holds more and more connections
            conn.request("GET", "/health")
            assert conn.getresponse().read()
        owners = server.owners([conn.sock.getsockname()[1] for conn in conns])
        assert held_by not in owners and 0 not in owners, (held_by, owners)
        slow.sendall(body[100:])
        assert slow.recv(4096).startswith(b"HTTP/1.1 201 ")
        for conn in conns:
            conn.close()
