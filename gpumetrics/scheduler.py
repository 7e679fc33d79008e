"""Runs the background jobs in exactly one process per deployment.

Every gunicorn worker starts a scheduler whose only job, at first, is to try once a
second to take an exclusive lock. The process that gets it keeps it for its lifetime
and schedules the real jobs (file tailing, retention). When it dies, however it dies,
the kernel releases the lock and another worker takes over within about a second.
The jobs are idempotent anyway: a file's position is stored with its records.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from config import Settings

from .db import Database
from .jobs import retention
from .jobs.tail import Tailer

log = logging.getLogger(__name__)
LEAD_EVERY_SEC = 1.0


def lock_path(settings: Settings, db: Database) -> Path:
    """SCHEDULER_LOCK_PATH, or a file beside the SQLite database, or one per database URL."""
    if settings.scheduler_lock_path:
        return Path(settings.scheduler_lock_path)
    if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
        return Path(db.url.database).absolute().with_suffix(".jobs.lock")
    digest = hashlib.sha1(str(db.url).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"gpumetrics-{digest}.jobs.lock"


def tailers(settings: Settings, db: Database) -> list[Tailer]:
    """A Tailer for each enabled file; files belong to this host."""
    host = socket.gethostname()
    enabled = [
        (settings.enable_ws_file, settings.input_ws_path),
        (settings.enable_msg_file, settings.input_msg_path),
    ]
    return [Tailer(db, path, host) for on, path in enabled if on]


def leader_pid(path: Path) -> int | None:
    """The pid written by the process holding the lock, if any."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


class Jobs:
    """The scheduler of one process, and the lock that makes it the one that runs jobs."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.tailers = tailers(settings, db)
        self.lock_path = lock_path(settings, db)
        self.scheduler = BackgroundScheduler(daemon=True)
        self._lock_fd: int | None = None

    @property
    def wanted(self) -> bool:
        return bool(self.tailers) or self.settings.metrics_retention_hours > 0

    def start(self) -> None:
        self.scheduler.add_job(
            self._try_to_lead, "interval", seconds=LEAD_EVERY_SEC, id="lead", next_run_time=datetime.now()
        )
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _try_to_lead(self) -> None:
        if self._lock_fd is not None:
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        log.info("pid %d runs the jobs (lock %s)", os.getpid(), self.lock_path)
        self.scheduler.remove_job("lead")
        now = datetime.now()
        if self.tailers:
            interval = self.settings.file_poll_interval_sec
            self.scheduler.add_job(self.tail, "interval", seconds=interval, id="tail", next_run_time=now, coalesce=True)
        if self.settings.metrics_retention_hours > 0:
            self.scheduler.add_job(
                self.retention,
                "interval",
                seconds=self.settings.retention_clean_interval_sec,
                id="retention",
                next_run_time=now,
                coalesce=True,
            )

    def tail(self) -> None:
        """Poll every file for about one interval; come back at once while behind."""
        deadline = time.monotonic() + max(self.settings.file_poll_interval_sec, 1.0)
        behind = False
        for tailer in self.tailers:
            try:
                tailer.poll(deadline)
            except Exception:
                log.exception("%s: tailing failed; retrying at the next poll", tailer.path)
            behind = behind or tailer.more
        if behind:
            self.scheduler.modify_job("tail", next_run_time=datetime.now())

    def retention(self) -> None:
        retention.purge(self.db, self.settings.metrics_retention_hours)


def start_jobs(app: Flask) -> Jobs | None:
    """Start this process's scheduler (it runs jobs only once it holds the lock)."""
    state = app.extensions["gpumetrics"]
    jobs = Jobs(state["settings"], state["db"])
    if not jobs.wanted:
        return None
    state["jobs"] = jobs
    jobs.start()
    return jobs
