"""Migration 0005: checkpoints of the (host, path) days are taken over, not read again; and back."""

from __future__ import annotations

import json

from alembic import command
from alembic.config import Config
from samples import record
from sqlalchemy import text

from gpumetrics import create_app
from gpumetrics.db import Database
from gpumetrics.db.database import MIGRATIONS
from gpumetrics.jobs.tail import Tailer
from gpumetrics.state import app_state

COUNTS = ("lines_read", "records_stored", "duplicates", "lines_rejected")


def lines(start: int, count: int) -> str:
    return "".join(json.dumps(record("power", s)) + "\n" for s in range(start, start + count))


def old_checkpoint(conn, host: str, path, position: int, line: int) -> None:
    """A row as the tailer before 0005 wrote it: keyed by (host, path), the file by device and inode."""
    stat = path.stat()
    conn.execute(
        text(
            "INSERT INTO tail_files (host, path, device, inode, position, line, updated_at, bytes_behind, "
            + ", ".join(COUNTS)
            + ") VALUES (:host, :path, :device, :inode, :position, :line, 0, 0, :line, :line, 0, 0)"
        ),
        {
            "host": host,
            "path": str(path),
            "device": stat.st_dev,
            "inode": stat.st_ino,
            "position": position,
            "line": line,
        },
    )


def test_a_checkpoint_from_before_the_upgrade_is_taken_over_by_its_host(settings, tmp_path):
    path = tmp_path / "ws_out.jsonl"
    path.write_text(lines(0, 5))
    old = Database(settings.database_url)
    old.upgrade("0004")
    with old.engine.begin() as conn:
        old_checkpoint(conn, "node-a", path, path.stat().st_size, 5)  # read to its end, records stored
        old_checkpoint(conn, "node-b", path, 0, 0)  # another host's file at that path (shared PostgreSQL)
    old.dispose()
    app = create_app(settings)  # upgrades
    db = app_state(app).db
    with path.open("a") as out:
        out.write(lines(5, 2))
    assert Tailer(db, path, "node-a").poll() == 2, "only the lines appended since"
    stored = app.test_client().get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()
    assert stored["value"] == 2
    with db.reading() as conn:
        rows = conn.execute(text("SELECT host, fingerprint IS NULL, lines_read FROM tail_files ORDER BY host"))
        assert [tuple(row) for row in rows] == [("node-a", False, 7), ("node-b", True, 0)]
    db.dispose()


def test_the_downgrade_keeps_the_newest_checkpoint_of_each_host_and_path(settings, tmp_path):
    path = tmp_path / "ws_out.jsonl"
    path.write_text(lines(0, 3))
    app = create_app(settings)
    db = app_state(app).db
    tailer = Tailer(db, path, "node-a")
    tailer.poll()
    path.rename(tmp_path / "ws_out.jsonl.1")
    path.write_text(lines(10, 4))
    assert tailer.poll() == 4
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT host, path, line FROM tail_files"))
        assert [tuple(row) for row in rows] == [("node-a", str(path), 4)]
    db.dispose()
