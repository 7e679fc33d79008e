"""Alembic migrations: they build exactly the schema of models.py, and upgrade old files in place."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import ROOT
from sqlalchemy import text

import config
from gpumetrics import create_app
from gpumetrics.db import Database
from gpumetrics.db.tables import metadata
from gpumetrics.state import app_state


# SQLite's reflection cannot read an expression index; its presence is checked by name.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrations_build_the_schema_of_the_models(app):
    db = app_state(app).db
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        if db.backend.name == "sqlite":
            identity = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'uq_records_identity'").scalar()
        else:
            identity = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_records_identity'"
            ).scalar()
    assert differences == []
    assert "UNIQUE" in identity.upper()
    assert re.search(r"coalesce\(pid, \(?'?-1", identity.lower()), identity
    assert db.revision() == "0009"


def test_a_file_of_the_previous_schema_is_upgraded_without_losing_a_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Database(url)
    old.upgrade("0001")
    with old.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO gpus (id, host, gpu_index, first_seen, last_seen) VALUES (1, '', 0, 0, 60000000)"
        )
        conn.exec_driver_sql(
            "INSERT INTO records (gpu_id, metric, ts, watts) VALUES "
            + ", ".join(f"(1, 'power', {s * 1_000_000}, {s}.5)" for s in range(61))
        )
    old.dispose()
    app = create_app(config.load({"DATABASE_URL": url, "METRICS_RETENTION_HOURS": "0"}))  # 2025 samples
    client = app.test_client()
    assert app_state(app).db.revision() == "0009"
    answer = client.get("/metrics/aggregate", query_string={"aggregate": "sum", "field": "watts"}).get_json()
    assert answer["count"] == 61 and answer["value"] == sum(s + 0.5 for s in range(61))
    assert client.get("/metrics", query_string={"limit": 1}).get_json()["items"][0] == {
        "timestamp": "1970-01-01T00:00:00Z",
        "gpuIndex": 0,
        "metric": "power",
        "watts": 0.5,
    }
    process = {"timestamp": "2025-01-01T00:00:00Z", "gpuIndex": 0, "metric": "process", "pid": 1, "usedMiB": 5}
    assert client.post("/metrics", json={**process, "processName": "python"}).status_code == 201


def test_migrate_command_by_hand(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "gpumetrics", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "database schema at revision 0009" in done.stdout


def test_an_existing_database_gets_its_rollups_and_latest_values(database_url):
    """Migration 0006 makes the rollups and the newest copies of records already stored."""
    old = Database(database_url)
    old.upgrade("0005")
    with old.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO gpus (id, host, gpu_index, first_seen, last_seen) VALUES (1, '', 0, 0, 200000000)"
        )
        conn.exec_driver_sql(
            "INSERT INTO records (gpu_id, metric, ts, watts) VALUES "
            + ", ".join(f"(1, 'power', {s * 1_000_000}, {s % 7}.25)" for s in range(200))
        )
        conn.exec_driver_sql(
            "INSERT INTO records (gpu_id, metric, ts, pid, used_mib) VALUES (1, 'process', 5000000, 3, 10), "
            "(1, 'process', 9000000, 4, 20), (1, 'process', 9000000, 5, 30)"
        )
    old.dispose()
    app = create_app(config.load({"DATABASE_URL": database_url, "METRICS_RETENTION_HOURS": "0"}))
    client = app.test_client()
    with app_state(app).db.reading() as conn:
        rollups = conn.execute(
            text("SELECT minute, count, sum, min, max, last FROM rollups WHERE field = 'watts' ORDER BY minute")
        ).all()
    assert [tuple(row) for row in rollups] == [
        (
            m * 60_000_000,
            60 if m < 3 else 20,
            sum(s % 7 + 0.25 for s in range(m * 60, min(200, m * 60 + 60))),
            0.25,
            6.25,
            (min(200, m * 60 + 60) - 1) % 7 + 0.25,
        )
        for m in range(4)
    ]
    latest = client.get("/metrics/latest").get_json()["items"]
    assert sorted((i["metric"], i.get("pid"), i["timestamp"]) for i in latest) == [
        ("power", None, "1970-01-01T00:03:19Z"),
        ("process", 4, "1970-01-01T00:00:09Z"),
        ("process", 5, "1970-01-01T00:00:09Z"),
    ]
    app_state(app).db.dispose()
