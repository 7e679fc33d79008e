"""End to end: the real gunicorn command, as the Dockerfile and `make serve` run it."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import GUNICORN, ROOT
from samples import FIELDS, record

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
