"""The operator commands, run as an operator runs them: `python -m gpumetrics ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT
from samples import record


def run(settings, *args, **env):
    full_env = {**os.environ, "DATABASE_URL": settings.database_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "gpumetrics", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_import_backfills_files_and_summarises(tmp_path, settings, client):
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(json.dumps(record("power", s)) for s in range(100)) + "\nnot json\n")
    second = tmp_path / "b.jsonl"
    second.write_text(
        json.dumps([record("memory", 1), record("memory", 2, usedMiB=-5)]) + "\n" + json.dumps(record("power", 3))
    )
    done = run(settings, "import", str(first), str(second))
    assert done.returncode == 1, "rejected lines make the exit status 1"
    assert f"{first}: 101 lines, 100 stored, 0 duplicates, 1 rejected" in done.stdout
    assert "  line 101: not JSON records" in done.stdout
    assert f"{second}: 2 lines, 1 stored, 1 duplicates, 1 rejected" in done.stdout
    assert "  line 1: invalid records" in done.stdout and "usedMiB" in done.stdout
    assert "a.jsonl" in done.stderr, "the progress bar goes to stderr"
    assert client.get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()["value"] == 101


def test_import_again_counts_duplicates_and_exits_zero(tmp_path, settings, client):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record("power")) + "\n")
    assert run(settings, "import", str(path)).returncode == 0
    done = run(settings, "import", str(path))
    assert done.returncode == 0 and "0 stored, 1 duplicates, 0 rejected" in done.stdout


def test_purge_runs_retention_now(settings, client):
    client.post("/metrics", json=[record("power", s, timestamp=f"2001-01-01T00:00:0{s}Z") for s in range(3)])
    done = run(settings, "purge", METRICS_RETENTION_HOURS="24")
    assert done.returncode == 0 and "deleted 3 records older than 24 hours" in done.stdout
    assert "retention is off" in run(settings, "purge", METRICS_RETENTION_HOURS="0").stdout
