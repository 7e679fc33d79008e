"""Locks that a process holds for as long as it lives, to run a job alone.

On one host (SQLite) a file lock: the kernel releases it when the holder dies, however
it dies. With PostgreSQL, replicas on several hosts share the database, so the lock is
a session advisory lock on a connection of its own: the server releases it when that
connection ends, so a dead replica's jobs are taken over too. Each lock names its
holder ("host:pid") so that /health can say who runs what.
"""

from __future__ import annotations

import fcntl
import os
import socket
import zlib
from pathlib import Path
from typing import Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool


class JobLock(Protocol):
    def try_acquire(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...
    def holder(self) -> str | None: ...


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # after a fork the pid is the child's


class FileLock:
    """An exclusive flock on a file that holds the holder's name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, _me().encode())
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:  # a shared lock we can take means nobody holds the exclusive one
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            except BlockingIOError:
                return os.read(fd, 256).decode(errors="replace") or None
        finally:
            os.close(fd)


class AdvisoryLock:
    """A PostgreSQL session advisory lock on a dedicated connection."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.key: int | None = None
        self.engine = create_engine(url, poolclass=NullPool)
        self._conn = None

    def _key(self, conn) -> int:
        """The lock's number, from its name and the schema: advisory locks are per database,
        and a deployment in another schema of it must not take this one's jobs."""
        if self.key is None:
            schema = conn.execute(text("SELECT current_schema()")).scalar()
            self.key = zlib.crc32(f"gpumetrics:{schema}:{self.name}".encode()) & 0x7FFFFFFF
        return self.key

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        try:
            conn = self.engine.connect()
            conn.execute(text("SELECT set_config('application_name', :me, false)"), {"me": f"gpumetrics {_me()}"})
            got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key(conn)}).scalar()
            conn.commit()
        except DBAPIError:
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """False once the lock's connection is gone (server restart, terminated backend)."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except DBAPIError:
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except DBAPIError:
                pass
            self._conn = None

    def holder(self) -> str | None:
        query = text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key AND l.objsubid = 1"
        )
        try:
            with self.engine.connect() as conn:
                name = conn.execute(query, {"key": self._key(conn)}).scalar()
        except DBAPIError:
            return None
        return name.removeprefix("gpumetrics ") if name else None
