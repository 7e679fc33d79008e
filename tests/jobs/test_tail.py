"""The JSONL tailer on real files: restarts, partial lines, rotation, truncation, bad lines, /health."""

from __future__ import annotations

import json
import logging
import os

import pytest
from samples import FIELDS, record

from gpumetrics.jobs import tail
from gpumetrics.jobs.scheduler import tailers
from gpumetrics.jobs.tail import Tailer
from gpumetrics.records import jsonl
from gpumetrics.state import app_state
from gpumetrics.store.jobs import CheckpointMoved, current_checkpoint


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


def append(path, text):
    with path.open("a") as out:
        out.write(text)


def stored(client):
    return client.get("/metrics/aggregate", query_string={"aggregate": "count"}).get_json()["value"]


def checkpoint(db, tailer):
    """The checkpoint of the file the tailer read last at its path."""
    with db.reading() as conn:
        return current_checkpoint(conn, tailer.host, tailer.key)


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
    real_insert, calls = tail.store_all, []

    def dies_on_the_third_transaction(conn, batch, *rest):
        calls.append(batch)
        if len(calls) == 3:
            real_insert(conn, batch, *rest)
            raise SystemExit("killed mid-transaction")
        return real_insert(conn, batch, *rest)

    monkeypatch.setattr(tail, "store_all", dies_on_the_third_transaction)
    with pytest.raises(SystemExit):
        Tailer(db, path, "host-a").poll()
    partial = stored(client)
    assert 0 < partial < 200
    monkeypatch.setattr(tail, "store_all", real_insert)
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
    append(path, last[20:])
    assert tailer.poll() == 0, "still no newline"
    append(path, "\n")
    assert tailer.poll() == 1
    assert stored(client) == 4


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(db, client, path):
    path.write_text(lines_of(numbered(0, 10)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    append(path, lines_of(numbered(10, 5)))
    os.rename(path, path.with_suffix(".jsonl.1"))
    path.write_text(lines_of(numbered(100, 7)))
    assert tailer.poll() == 12
    assert stored(client) == 22
    assert checkpoint(db, tailer).line == 7


def test_a_rotated_file_is_read_on_until_the_new_one_has_a_line(db, client, path):
    """logrotate's create mode: rename, create an empty file, then the writer reopens; until it
    does, it writes to the renamed file, and those lines are read too."""
    path.write_text(lines_of(numbered(0, 3)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    rotated = path.with_suffix(".jsonl.1")
    os.rename(path, rotated)
    append(rotated, lines_of(numbered(3, 2)))
    assert tailer.poll() == 2, "missing, the renamed file is read on"
    path.touch()
    append(rotated, lines_of(numbered(5, 1)) + json.dumps(record("power", 6))[:10])
    assert tailer.poll() == 1, "the new file has no line yet: the old one may still grow"
    append(rotated, json.dumps(record("power", 6))[10:] + "\n")
    append(path, lines_of(numbered(100, 1)))
    assert tailer.poll() == 2
    assert stored(client) == 8
    append(rotated, lines_of(numbered(7, 1)))
    assert tailer.poll() == 0, "finished once the writer moved to the new file"


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


def test_health_shows_each_file(make_app, path):
    app = make_app(enable_ws_file=True, input_ws_path=str(path))
    path.write_text(lines_of(numbered(0, 3)) + "oops\n" + '{"partial')
    [tailer] = tailers(app_state(app).settings, app_state(app).db)
    tailer.poll()
    files = app.test_client().get("/health").get_json()["jobs"]["files"]
    assert files == {
        str(path): {
            "linesRead": 4,
            "recordsStored": 3,
            "duplicates": 0,
            "linesRejected": 1,
            "bytesBehind": 9,
            "state": "ok",
        }
    }


# Copy-truncate: a file truncated and refilled before the next poll is read from its start.


def truncate_and_refill(path, text):
    """What `: > file` and then the crawler's appends do: the same file (inode), new bytes."""
    with path.open("r+") as out:
        out.truncate(0)
    append(path, text)


@pytest.mark.parametrize("refill", ["same length", "longer"])
def test_a_file_truncated_and_refilled_before_the_next_poll_is_read_from_its_start(db, client, path, refill):
    """The issue's repro: two lines, a poll, `: > file`, two lines of the same length (or
    more, so that the old read position falls in the middle of a line)."""
    before, after = lines_of(numbered(0, 2)), lines_of(numbered(10, 2 if refill == "same length" else 3))
    assert len(after) >= len(before) and (refill == "longer") == (len(after) > len(before))
    path.write_text(before)
    tailer = Tailer(db, path, "host-a")
    assert tailer.poll() == 2
    inode = path.stat().st_ino
    truncate_and_refill(path, after)
    assert path.stat().st_ino == inode
    assert tailer.poll() == after.count("\n")
    assert stored(client) == 2 + after.count("\n")
    point = checkpoint(db, tailer)
    assert (point.lines_rejected, point.duplicates, point.position) == (0, 0, len(after))


def test_a_file_refilled_with_the_same_first_line_is_told_by_the_bytes_before_the_position(db, client, path):
    """Same first line, so the same fingerprint: the checksum of the bytes before the read
    position tells that the file was rewritten, not appended to."""
    first, second, other = (json.dumps(r) + "\n" for r in (record("power", 0), record("power", 1), record("power", 2)))
    assert len(second) == len(other)
    path.write_text(first + second)
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    truncate_and_refill(path, first + other)
    assert tailer.poll() == 2
    assert stored(client) == 3
    assert checkpoint(db, tailer).duplicates == 1  # the first line, read again


def test_an_appended_file_is_read_on_not_again(db, client, path):
    path.write_text(lines_of(numbered(0, 2)))
    tailer = Tailer(db, path, "host-a")
    tailer.poll()
    append(path, lines_of(numbered(2, 2)))
    assert tailer.poll() == 2
    assert checkpoint(db, tailer).duplicates == 0


# Identity: checkpoints belong to the file (path and fingerprint), not to the hostname.


def test_a_restart_under_another_hostname_reads_on_where_the_old_one_stopped(db, client, path):
    path.write_text(lines_of(numbered(0, 5)))
    Tailer(db, path, "container-1").poll()
    append(path, lines_of(numbered(5, 3)))
    renamed = Tailer(db, path, "container-2")
    assert renamed.poll() == 3
    point = checkpoint(db, renamed)
    assert (point.lines_read, point.records_stored, point.duplicates) == (8, 8, 0)


def test_a_rotation_while_down_is_followed_by_a_restart_under_another_hostname(db, client, path):
    path.write_text(lines_of(numbered(0, 5)))
    Tailer(db, path, "container-1").poll()
    append(path, lines_of(numbered(5, 3)))
    os.rename(path, path.with_suffix(".jsonl.1"))
    path.write_text(lines_of(numbered(100, 2)))
    assert Tailer(db, path, "container-2").poll() == 5, "the rest of the old file, then the new one"
    assert stored(client) == 10
    assert Tailer(db, path, "container-3").poll() == 0


def test_two_hosts_tail_their_own_files_at_one_path_with_their_own_checkpoints(db, client, tmp_path, path):
    """Two hosts on one database, each with its own file at the same path. One test process
    has one file system, so each host's disk is a folder whose file is moved to the path
    while that host polls: the same path, two files (two inodes, two first lines)."""
    disks = {host: tmp_path / host for host in ("node-a", "node-b")}
    for count, (host, disk) in enumerate(disks.items(), start=3):
        disk.mkdir()
        (disk / path.name).write_text(lines_of(record("power", s, host=host) for s in range(count)))
    readers = {host: Tailer(db, path, host) for host in disks}

    def poll(host, more=0):
        append(disks[host] / path.name, lines_of(record("power", 100 + s, host=host) for s in range(more)))
        os.rename(disks[host] / path.name, path)
        try:
            return readers[host].poll()
        finally:
            os.rename(path, disks[host] / path.name)

    assert (poll("node-a"), poll("node-b"), poll("node-a", more=2), poll("node-b", more=1)) == (3, 4, 2, 1)
    points = {host: checkpoint(db, tailer) for host, tailer in readers.items()}
    assert points["node-a"].fingerprint != points["node-b"].fingerprint
    assert [(p.lines_read, p.records_stored, p.duplicates) for p in points.values()] == [(5, 5, 0), (5, 5, 0)]
    assert stored(client) == 10


def test_two_processes_on_one_file_never_count_a_line_twice(db, client, path, monkeypatch):
    """Two containers on one volume for a moment (a restart that overlaps): the one whose
    checkpoint was moved under it rolls its transaction back, records and all."""
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 1000)
    path.write_text(lines_of(numbered(0, 50)))
    first, second = Tailer(db, path, "container-1"), Tailer(db, path, "container-2")
    real_prepare, cut_in = tail.prepare_all, []

    def second_cuts_in(records, events):
        """Before the first process stores its first chunk, the second reads the whole file."""
        if not cut_in:
            cut_in.append(None)
            cut_in.append(second.poll())
        return real_prepare(records, events)

    monkeypatch.setattr(tail, "prepare_all", second_cuts_in)
    with pytest.raises(CheckpointMoved):
        first.poll()
    assert cut_in == [None, 50] and first.poll() == 0
    point = checkpoint(db, second)
    assert (point.lines_read, point.records_stored, point.duplicates) == (50, 50, 0)


# A missing or unreadable file: one line when it starts, one when it ends; /health shows it.


def tail_log(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gpumetrics.jobs.tail"]


def test_a_missing_file_is_logged_once_when_it_goes_and_once_when_it_is_back(db, client, path, caplog):
    caplog.set_level(logging.INFO, logger="gpumetrics.jobs.tail")
    tailer = Tailer(db, path, "host-a")
    for _ in range(3):
        tailer.poll()
    Tailer(db, path, "host-a").poll()  # a restart: the state is kept, not logged again
    assert tail_log(caplog) == [
        ("WARNING", f"{path}: missing (No such file or directory); checking again at each poll")
    ]
    path.write_text(lines_of(numbered(0, 2)))
    for _ in range(3):
        tailer.poll()
    assert [level for level, _ in tail_log(caplog)] == ["WARNING", "INFO"]
    assert tail_log(caplog)[1][1].startswith(f"{path}: readable again, after being missing since ")
    assert stored(client) == 2


def test_an_unreadable_file_is_logged_once_and_read_when_it_can_be(db, client, path, caplog):
    """A directory where the file belongs: unreadable even to root (chmod is not, to root)."""
    caplog.set_level(logging.INFO, logger="gpumetrics.jobs.tail")
    path.mkdir()
    tailer = Tailer(db, path, "host-a")
    for _ in range(3):
        assert tailer.poll() == 0
    path.rmdir()
    path.write_text(lines_of(numbered(0, 2)))
    assert tailer.poll() == 2 and tailer.poll() == 0
    log = tail_log(caplog)
    assert [level for level, _ in log] == ["WARNING", "INFO"]
    assert log[0][1] == f"{path}: unreadable (Is a directory); checking again at each poll"


def test_health_shows_a_missing_or_unreadable_file_and_stays_ok(make_app, path):
    app = make_app(enable_ws_file=True, input_ws_path=str(path))
    [tailer] = tailers(app_state(app).settings, app_state(app).db)
    http = app.test_client()

    def health():
        answer = http.get("/health")
        assert answer.status_code == 200
        body = answer.get_json()
        return body["status"], body["jobs"]["files"][str(path)]["state"]

    assert health() == ("ok", None), "not looked at yet"
    tailer.poll()
    assert health() == ("ok", "missing")
    path.mkdir()
    tailer.poll()
    assert health() == ("ok", "unreadable")
    path.rmdir()
    path.write_text(lines_of(numbered(0, 2)))
    tailer.poll()
    assert health() == ("ok", "ok")
    path.unlink()
    tailer.poll()
    files = http.get("/health").get_json()["jobs"]["files"]
    assert files[str(path)] == {
        "linesRead": 2,
        "recordsStored": 2,
        "duplicates": 0,
        "linesRejected": 0,
        "bytesBehind": 0,
        "state": "missing",
    }, "the figures of the file last read there"
