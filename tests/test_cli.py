"""The operator commands, run as an operator runs them: `python -m gpumetrics ...`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from click.testing import CliRunner
from conftest import ROOT
from samples import record

import gpumetrics
from gpumetrics import cli
from gpumetrics.records import jsonl


def run(settings, *args, **env):
    # Retention off unless a test sets it: the sample records are from 2025.
    full_env = {**os.environ, "DATABASE_URL": settings.database_url, "METRICS_RETENTION_HOURS": "0", **env}
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


def test_help_and_version_need_no_settings_touch_no_database_and_create_no_file(tmp_path):
    """Run where the default database (./metrics.db) would be made, with settings that could not start."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAX_BATCH": "lots"}
    env.pop("DATABASE_URL", None)
    done = {
        flag: subprocess.run(
            [sys.executable, "-m", "gpumetrics", flag],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for flag in ("--help", "--version")
    }
    assert all(run.returncode == 0 and run.stderr == "" for run in done.values()), done
    assert list(tmp_path.iterdir()) == [], "no database, lock or other file"
    assert done["--version"].stdout == f"gpumetrics {gpumetrics.__version__}\n"
    listed = re.findall(r"^  ([a-z]+) ", done["--help"].stdout.split("Commands:\n", 1)[1], re.MULTILINE)
    assert listed == ["import", "migrate", "purge"], "gpumetrics' own commands only, not Flask's run, shell, routes"


def test_import_prints_each_line_of_a_reason_on_a_line_of_its_own(tmp_path, settings, monkeypatch):
    """A reason of several lines (one per record of a rejected array) stays readable, indented."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record("power")) + "\n")
    reason = "invalid records:\nrecord 0: celsius: Not a valid number.\nrecord 1: timestamp: Missing."

    def lines_with_a_long_reason(handle, *args, **kwargs):
        handle.read()
        yield jsonl.Lines(size=path.stat().st_size, read=3, last=3, rejected=[(3, reason)])

    monkeypatch.setattr(jsonl, "read_lines", lines_with_a_long_reason)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    done = CliRunner().invoke(cli.main, ["import", str(path)])
    assert done.exit_code == 1
    assert done.output.splitlines()[-4:] == [
        f"{path}: 3 lines, 0 stored, 0 duplicates, 1 rejected",
        "  line 3: invalid records:",
        "    record 0: celsius: Not a valid number.",
        "    record 1: timestamp: Missing.",
    ]
