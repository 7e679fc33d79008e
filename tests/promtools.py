"""Prometheus for the tests: promtool's format check, a real Prometheus, and the exposition parsed.

Why real ones: what matters is that Prometheus itself parses /prometheus and that the
dashboards' queries answer, not that a parser of ours agrees with a writer of ours.
Debian's `prometheus` package (2.42) brings both binaries; .ci/run installs it. Without
it the tests that need it are skipped, saying why, except in CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

# promtool 2.42 cannot turn its lint off; dcgm-exporter's own labels (modelName) fail it.
CAMEL_CASE_LINT = "label names should be written in 'snake_case' not 'camelCase'"


def binary(name: str) -> str:
    """The path of a Prometheus binary, or a skip (a failure in CI) naming the package."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def check_metrics(text: str) -> None:
    """promtool check metrics: a parse error fails; of its lint, only the camelCase labels are allowed."""
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode in (0, 3), f"promtool exit {done.returncode}: {done.stderr}"
    assert all(line.endswith(CAMEL_CASE_LINT) for line in problems), problems


def families(text: str) -> dict[str, Any]:
    """The exposition parsed by prometheus-client's parser, by family name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of one name: (labels, value)."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels` (0 if there is none)."""
    found = [v for have, v in samples(text, name) if labels.items() <= have.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


README = Path(__file__).resolve().parent.parent / "README.md"
README_TARGET = "gpumetrics.example:8080"
README_KEY = "<a key of READ_API_KEYS>"


def scrape_config(target: str, key: str | None = None, job: str = "gpumetrics") -> str:
    """The README's scrape job as it is written there, pointed at `target`: its `authorization`
    with `key` as the bearer token, or without it (an open service) when there is no key."""
    section = README.read_text().split("### Prometheus", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    lines = block.split("scrape_configs:\n", 1)[1].splitlines(keepends=True)
    if key is None:
        lines = [line for line in lines if "authorization:" not in line and README_KEY not in line]
    text = "".join(lines)
    assert README_TARGET in text and "job_name: gpumetrics" in text, text
    return text.replace(README_TARGET, target).replace(README_KEY, key or "").replace("gpumetrics", job, 1)


class Prometheus:
    """A real Prometheus on a free local port, its storage in `folder`, scraping every second."""

    def __init__(self, folder: Path, jobs: list[str]) -> None:
        self.folder = folder
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n" + "".join(jobs)
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "prometheus.log"
        command = [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> Prometheus:
        """Once it answers: before it is ready its API says 503."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited {self.process.returncode}: {self.log.read_text()}")
            try:
                return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(ready, timeout=60, every=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: Any) -> Any:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": labels, "value": [time, "value"]}]."""
        return self.api("query", query=expr)["result"]

    def wait(self, expr: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The query's answer once it has `count` series (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited {self.process.returncode}: {self.log.read_text()}")
            try:
                result = self.query(expr)
            except requests.RequestException:
                result = []
            if len(result) >= count:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{expr}: {len(result)} series after {timeout} s; targets: {self.targets()}")

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
