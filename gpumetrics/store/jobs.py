"""What the background jobs keep in the database: file checkpoints, runs and runners.

The jobs write it; /health reads it, so any worker of any replica can report on jobs
that run elsewhere without building job objects of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from .. import times
from ..db.tables import job_runners, job_runs, tail_files


@dataclass(frozen=True)
class Checkpoint:
    """Where one file was read up to, and what its lines gave."""

    device: int
    inode: int
    position: int = 0
    line: int = 0  # number of the last line consumed
    lines_read: int = 0
    records_stored: int = 0
    duplicates: int = 0
    lines_rejected: int = 0
    bytes_behind: int | None = None  # at the last poll

    def report(self) -> dict[str, Any]:
        """The file's figures as /health shows them."""
        return {
            "linesRead": self.lines_read,
            "recordsStored": self.records_stored,
            "duplicates": self.duplicates,
            "linesRejected": self.lines_rejected,
            "bytesBehind": self.bytes_behind,
        }


def load_checkpoint(session: Session, host: str, path: str) -> Checkpoint | None:
    row = session.execute(select(tail_files).where(tail_files.c.host == host, tail_files.c.path == path)).first()
    if row is None:
        return None
    return Checkpoint(**{name: getattr(row, name) for name in Checkpoint.__dataclass_fields__})


def save_checkpoint(session: Session, host: str, path: str, checkpoint: Checkpoint) -> None:
    values = {**asdict(checkpoint), "updated_at": times.now_micros()}
    where = (tail_files.c.host == host, tail_files.c.path == path)
    if session.execute(update(tail_files).where(*where).values(**values)).rowcount == 0:
        session.execute(insert(tail_files).values(host=host, path=path, **values))


def _upsert(session: Session, table: Any, name: str, values: dict[str, Any]) -> None:
    if session.execute(update(table).where(table.c.name == name).values(**values)).rowcount == 0:
        session.execute(insert(table).values(name=name, **values))


def save_run(session: Session, name: str, started: int, outcome: dict[str, Any]) -> None:
    values = {"started_at": started, "finished_at": times.now_micros(), "outcome": json.dumps(outcome)}
    _upsert(session, job_runs, name, values)


def last_run(session: Session, name: str) -> dict[str, Any] | None:
    row = session.execute(select(job_runs).where(job_runs.c.name == name)).first()
    if row is None:
        return None
    return {
        "startedAt": times.to_iso(row.started_at),
        "finishedAt": times.to_iso(row.finished_at),
        **json.loads(row.outcome),
    }


def save_runner(session: Session, name: str, runner: str) -> None:
    """Record that `runner` ("host:pid") has just taken job `name`."""
    _upsert(session, job_runners, name, {"runner": runner, "since": times.now_micros()})


def runners(session: Session) -> dict[str, str]:
    """The process that took each job last, by job name."""
    return {row.name: row.runner for row in session.execute(select(job_runners))}
