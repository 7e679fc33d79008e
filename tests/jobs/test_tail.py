"""The JSONL tailer on real files: restarts, partial lines, rotation, truncation, bad lines."""

from __future__ import annotations

import json
import logging
import os

import pytest
from samples import FIELDS, record

from gpumetrics.jobs import tail
from gpumetrics.jobs.tail import Tailer
from gpumetrics.records import jsonl
from gpumetrics.state import app_state
from gpumetrics.store.jobs import load_checkpoint


@pytest.fixture
def db(app):
    return app_state(app).db


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ws_out.jsonl"


def lines_of(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def numbered(start, count, kind="power"):
    return [record(kind, second) for second in range(start, start + count)]


def stored(client):
    return client.get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()["value"]


def checkpoint(db, tailer):
    with db.reading() as session:
        return load_checkpoint(session, tailer.host, tailer.key)


def test_lines_and_arrays_are_stored_with_their_counts(db, client, path):
    batch = [record(kind, 100) for kind in FIELDS]
    path.write_text(lines_of(numbered(0, 5)) + json.dumps(batch) + "\n\n")
    tailer = Tailer(db, path, "host-a")
    assert tailer.poll() == 7
    assert stored(client) == 11
    point = checkpoint(db, tailer)
    assert (point.lines_read, point.records_stored, point.lines_rejected, point.line) == (6, 11, 0, 7)
    assert point.position == path.stat().st_size
    assert tailer.poll() == 0 and checkpoint(db, tailer).bytes_behind == 0


def test_a_restart_in_the_middle_resumes_without_loss_or_double(db, client, path, monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 1000)
    path.write_text(lines_of(numbered(0, 200)))
    real_insert, calls = tail.store_records, []

    def dies_on_the_third_transaction(session, batch):
        calls.append(batch)
        if len(calls) == 3:
            real_insert(session, batch)
            raise SystemExit("killed mid-transaction")
        return real_insert(session, batch)

    monkeypatch.setattr(tail, "store_records", dies_on_the_third_transaction)
    with pytest.raises(SystemExit):
        Tailer(db, path, "host-a").poll()
    partial = stored(client)
    assert 0 < partial < 200
    monkeypatch.setattr(tail, "store_records", real_insert)
    fresh = Tailer(db, path, "host-a")  # a new process: nothing but the database survives
    fresh.poll()
    assert stored(client) == 200
    point = checkpoint(db, fresh)
    assert (point.records_stored, point.duplicates, point.lines_read) == (200, 0, 200)


def test_a_partial_last_line_waits_for_its_newline(db, client, path):
    whole, last = lines_of(numbered(0, 3)), json.dumps(record("power", 99))
    path.write_text(whole + last[:20])
    tailer = Tailer(db, path, "host-a")
    assert tailer.poll() == 3
    assert checkpoint(db, tailer).bytes_behind == 20
    with path.open("a") as out:
        out.write(last[20:])
    assert tailer.poll() == 0, "still no newline"
    with path.open("a") as out:
        out.write("\n")
    assert tailer.poll() == 1
    assert stored(client) == 4


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(db, client, path):
    path.write_text(lines_of(numbered(0, 10)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    with path.open("a") as out:
        out.write(lines_of(numbered(10, 5)))
    os.rename(path, path.with_suffix(".jsonl.1"))
    path.write_text(lines_of(numbered(100, 7)))
    assert tailer.poll() == 12
    assert stored(client) == 22
    assert checkpoint(db, tailer).line == 7


def test_rotation_with_the_old_file_gone_starts_the_new_one(db, client, path):
    path.write_text(lines_of(numbered(0, 10)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    path.unlink()
    assert tailer.poll() == 0
    path.write_text(lines_of(numbered(100, 3)))
    assert tailer.poll() == 3
    assert stored(client) == 13


def test_copy_truncate_is_read_again_from_the_start(db, client, path):
    path.write_text(lines_of(numbered(0, 10)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    with path.open("r+") as out:
        out.truncate(0)
    path.write_text(lines_of(numbered(200, 4)))
    assert tailer.poll() == 4
    assert stored(client) == 14


def test_a_missing_file_is_waited_for(db, client, path):
    tailer = Tailer(db, path, "host-a")
    assert tailer.poll() == 0
    assert checkpoint(db, tailer) is None
    path.write_text(lines_of(numbered(0, 2)))
    assert tailer.poll() == 2


def test_bad_lines_are_skipped_counted_and_logged(db, client, path, caplog):
    good = numbered(0, 3)
    path.write_text(
        lines_of(good[:1])
        + "not json\n"
        + json.dumps(record("power", 50, watts="lots")) + "\n"
        + json.dumps([record("power", 60), record("power", 61, watts=-1)]) + "\n"
        + "42\n"
        + lines_of(good[1:])
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gpumetrics.jobs.tail"):
        tailer = Tailer(db, path, "host-a")
        assert tailer.poll() == 7
    assert stored(client) == 4  # three good lines and the valid half of the array
    point = checkpoint(db, tailer)
    assert (point.lines_read, point.lines_rejected) == (7, 4)
    messages = [r.getMessage() for r in caplog.records]
    for line in (2, 3, 4, 5):
        assert any(f"{path}:{line}: rejected" in m for m in messages), messages
    assert "watts" in next(m for m in messages if f":{3}: rejected" in m)


def test_a_line_longer_than_the_limit_is_rejected_without_stopping(db, client, path, monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 64)
    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 1000)
    path.write_text(
        lines_of(numbered(0, 1)) + json.dumps(record("power", 5, pad="x" * 5000)) + "\n" + lines_of(numbered(9, 1))
    )
    tailer = Tailer(db, path, "host-a")
    assert tailer.poll() == 3
    assert stored(client) == 2
    assert checkpoint(db, tailer).lines_rejected == 1


def test_files_of_two_hosts_have_their_own_checkpoints(db, client, path):
    path.write_text(lines_of(numbered(0, 4)))
    Tailer(db, path, "host-a").poll()
    other = Tailer(db, path, "host-b")
    assert other.poll() == 4
    assert checkpoint(db, other).duplicates == 4


def test_health_shows_each_file(tmp_path, path):
    import config
    from gpumetrics import create_app

    settings = config.load(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", "ENABLE_WS_FILE": "true", "INPUT_WS_PATH": str(path)}
    )
    app = create_app(settings)
    path.write_text(lines_of(numbered(0, 3)) + "oops\n" + '{"partial')
    from gpumetrics.jobs.scheduler import tailers

    [tailer] = tailers(settings, app_state(app).db)
    tailer.poll()
    files = app.test_client().get("/health").get_json()["jobs"]["files"]
    assert files == {
        str(path): {"linesRead": 4, "recordsStored": 3, "duplicates": 0, "linesRejected": 1, "bytesBehind": 9}
    }
