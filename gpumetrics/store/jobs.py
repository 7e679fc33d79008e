"""What the background jobs keep in the database: file checkpoints, tailed paths, runs and runners.

The jobs write it; /health reads it, so any worker of any replica can report on jobs
that run elsewhere without building job objects of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from .. import times
from ..db.tables import job_runners, job_runs, tail_files, tail_paths


@dataclass(frozen=True)
class Checkpoint:
    """Where one file was read up to, and what its lines gave.

    A file is known by its path and `fingerprint` (jobs/tail.py); `device` and `inode`
    are only a hint to find it again once it is rotated away under another name.
    """

    fingerprint: str | None  # None only in a checkpoint from before migration 0005
    device: int
    inode: int
    position: int = 0
    position_sum: str | None = None  # checksum of the bytes just before `position`
    line: int = 0  # number of the last line consumed
    lines_read: int = 0
    records_stored: int = 0
    duplicates: int = 0
    lines_rejected: int = 0
    bytes_behind: int | None = None  # at the last poll
    finished_at: int | None = None  # when the file, rotated away, was read to its end

    def report(self) -> dict[str, Any]:
        """The file's figures as /health shows them."""
        return {
            "linesRead": self.lines_read,
            "recordsStored": self.records_stored,
            "duplicates": self.duplicates,
            "linesRejected": self.lines_rejected,
            "bytesBehind": self.bytes_behind,
        }


@dataclass(frozen=True)
class PathState:
    """What a host's tailer last found at a path: ok, missing or unreadable, since when, and which file."""

    state: str
    since: int
    fingerprint: str | None  # the file last read at the path


class CheckpointMoved(RuntimeError):
    """Another process saved the checkpoint since this one read it: its transaction must not commit."""


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(**{name: getattr(row, name) for name in Checkpoint.__dataclass_fields__})


def load_checkpoint(conn: Connection, path: str, fingerprint: str) -> Checkpoint | None:
    where = (tail_files.c.path == path, tail_files.c.fingerprint == fingerprint)
    row = conn.execute(select(tail_files).where(*where)).first()
    return None if row is None else _checkpoint(row)


def unfinished_checkpoints(conn: Connection, path: str, other_than: str | None) -> list[Checkpoint]:
    """Checkpoints of files that were at `path` and were not read to their end after they left it.

    Some may be another host's (a shared database): the caller proves a file its own by
    its fingerprint before it reads it.
    """
    where = (
        tail_files.c.path == path,
        tail_files.c.fingerprint.is_not(None),
        tail_files.c.fingerprint != (other_than or ""),
        tail_files.c.finished_at.is_(None),
    )
    return [_checkpoint(row) for row in conn.execute(select(tail_files).where(*where))]


def adopt_legacy(
    conn: Connection, host: str, path: str, fingerprint: str, device: int, inode: int
) -> Checkpoint | None:
    """Take over `host`'s checkpoint from before migration 0005 if it is about this file (same device and inode)."""
    where = (
        tail_files.c.host == host,
        tail_files.c.path == path,
        tail_files.c.fingerprint.is_(None),
        tail_files.c.device == device,
        tail_files.c.inode == inode,
    )
    if conn.execute(update(tail_files).where(*where).values(fingerprint=fingerprint)).rowcount != 1:
        return None
    return load_checkpoint(conn, path, fingerprint)


def save_checkpoint(
    conn: Connection, host: str, path: str, checkpoint: Checkpoint, previous: Checkpoint | None
) -> None:
    """Insert a new file's checkpoint (`previous` None), or move it on from `previous`.

    Raises CheckpointMoved when the row no longer holds `previous`' position: another
    process tails the same file (two containers on one volume for a moment), and this
    transaction, records included, is rolled back rather than counted twice.
    """
    values = {**asdict(checkpoint), "host": host, "updated_at": times.now_micros()}
    if previous is None:
        conn.execute(insert(tail_files).values(path=path, **values))
        return
    where = (
        tail_files.c.path == path,
        tail_files.c.fingerprint == previous.fingerprint,
        tail_files.c.position == previous.position,
        tail_files.c.line == previous.line,
    )
    if conn.execute(update(tail_files).where(*where).values(**values)).rowcount != 1:
        raise CheckpointMoved(f"{path}: another process moved the checkpoint of this file")


def load_path_state(conn: Connection, host: str, path: str) -> PathState | None:
    where = (tail_paths.c.host == host, tail_paths.c.path == path)
    row = conn.execute(select(tail_paths).where(*where)).first()
    return None if row is None else PathState(row.state, row.since, row.fingerprint)


def save_path_state(conn: Connection, host: str, path: str, state: PathState) -> None:
    where = (tail_paths.c.host == host, tail_paths.c.path == path)
    if conn.execute(update(tail_paths).where(*where).values(**asdict(state))).rowcount == 0:
        conn.execute(insert(tail_paths).values(host=host, path=path, **asdict(state)))


def current_checkpoint(conn: Connection, host: str, path: str) -> Checkpoint | None:
    """The checkpoint of the file `host`'s tailer read last at `path`."""
    state = load_path_state(conn, host, path)
    return None if state is None or state.fingerprint is None else load_checkpoint(conn, path, state.fingerprint)


def file_report(conn: Connection, host: str, path: str) -> dict[str, Any]:
    """/health's view of a path `host` tails: the figures of the file last read there, and
    `state` (ok, missing or unreadable; None until the tailer has looked at it)."""
    state = load_path_state(conn, host, path)
    checkpoint = current_checkpoint(conn, host, path)
    figures = (checkpoint or Checkpoint(None, 0, 0)).report()
    return {**figures, "state": state.state if state else None}


def _upsert(conn: Connection, table: Any, name: str, values: dict[str, Any]) -> None:
    if conn.execute(update(table).where(table.c.name == name).values(**values)).rowcount == 0:
        conn.execute(insert(table).values(name=name, **values))


def save_run(conn: Connection, name: str, started: int, outcome: dict[str, Any]) -> None:
    values = {"started_at": started, "finished_at": times.now_micros(), "outcome": json.dumps(outcome)}
    _upsert(conn, job_runs, name, values)


def last_run(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(job_runs).where(job_runs.c.name == name)).first()
    if row is None:
        return None
    return {
        "startedAt": times.to_iso(row.started_at),
        "finishedAt": times.to_iso(row.finished_at),
        **json.loads(row.outcome),
    }


def save_runner(conn: Connection, name: str, runner: str) -> None:
    """Record that `runner` ("host:pid") has just taken job `name`."""
    _upsert(conn, job_runners, name, {"runner": runner, "since": times.now_micros()})


def runners(conn: Connection) -> dict[str, str]:
    """The process that took each job last, by job name."""
    return {row.name: row.runner for row in conn.execute(select(job_runners))}
