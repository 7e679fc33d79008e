"""Runs each background job in exactly one process of the deployment.

Every gunicorn worker starts an APScheduler whose first job tries, once a second, to
take the lock of each job (db/locks.py). The process that gets a lock runs that job
for as long as it holds it, and writes its name to the database for /health; when it
dies, however it dies, the lock is released and another process takes the job over
within about a second. Retention has one lock per deployment; file tailing one per
host, because the files belong to the host that writes them. The jobs are idempotent
anyway: a file's position is stored with its records.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from config import Settings

from ..db import Database
from ..db.locks import JobLock
from ..store import jobs as job_status
from . import retention
from .tail import Tailer

log = logging.getLogger(__name__)
LEAD_EVERY_SEC = 1.0


def tailers(settings: Settings, db: Database) -> list[Tailer]:
    """A Tailer for each enabled file.

    Checkpoints are keyed by the file itself (its path and fingerprint), so a restart
    under another hostname reads on; the hostname only names this host's view of each
    path (missing, unreadable) for /health.
    """
    return [Tailer(db, path, socket.gethostname(), settings) for path in settings.tailed_files]


def job_names(settings: Settings) -> list[str]:
    """The jobs these settings turn on."""
    names = ["tail"] if settings.tailed_files else []
    kept = (settings.metrics_retention_hours, settings.span_retention_hours)
    return names + (["retention"] if any(hours is not None for hours in kept) else [])


def _lock_name(name: str) -> str:
    return f"tail@{socket.gethostname()}" if name == "tail" else name


class Jobs:
    """One process's scheduler, and the locks that decide which jobs it runs."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.tailers = tailers(settings, db)
        self.locks: dict[str, JobLock] = {
            name: db.job_lock(_lock_name(name), settings.scheduler_lock_path) for name in job_names(settings)
        }
        self.running: set[str] = set()
        self.scheduler = BackgroundScheduler(daemon=True)

    def start(self) -> None:
        now = datetime.now()
        self.scheduler.add_job(self._lead, "interval", seconds=LEAD_EVERY_SEC, id="lead", next_run_time=now)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for lock in self.locks.values():
            lock.release()

    def _lead(self) -> None:
        """Take the lock of every job not running here; drop a job whose lock was lost."""
        for name, lock in self.locks.items():
            if name in self.running:
                if not lock.still_held():
                    log.warning("pid %d lost the lock of the %s job; stopping it", os.getpid(), name)
                    self.scheduler.remove_job(name)
                    self.running.discard(name)
                continue
            if lock.try_acquire():
                log.info("pid %d runs the %s job", os.getpid(), name)
                with self.db.writing() as conn:
                    job_status.save_runner(conn, name, f"{socket.gethostname()}:{os.getpid()}")
                self.running.add(name)
                self._schedule(name)

    def _schedule(self, name: str) -> None:
        every = {
            "tail": self.settings.file_poll_interval_sec,
            "retention": self.settings.retention_clean_interval_sec,
        }[name]
        job = {"tail": self.tail, "retention": self.retention}[name]
        self.scheduler.add_job(job, "interval", seconds=every, id=name, next_run_time=datetime.now(), coalesce=True)

    def tail(self) -> None:
        """Poll every file for most of one interval; come back at once while behind.

        Ending before the next tick keeps APScheduler from skipping (and logging) runs.
        """
        deadline = time.monotonic() + 0.8 * self.settings.file_poll_interval_sec
        behind = False
        for tailer in self.tailers:
            try:
                tailer.poll(deadline)
            except Exception:
                log.exception("%s: tailing failed; retrying at the next poll", tailer.path)
            behind = behind or tailer.more
        if behind and "tail" in self.running:
            self.scheduler.modify_job("tail", next_run_time=datetime.now())

    def retention(self) -> None:
        hours = self.settings.metrics_retention_hours
        if hours is not None:
            retention.purge(self.db, hours, self.settings.rollup_retention_days)
        if self.settings.span_retention_hours is not None:
            retention.purge_spans(self.db, self.settings.span_retention_hours)


def start_jobs(settings: Settings, db: Database) -> Jobs | None:
    """Start this process's scheduler (it runs a job only while it holds its lock)."""
    if not job_names(settings):
        return None
    jobs = Jobs(settings, db)
    jobs.start()
    return jobs
