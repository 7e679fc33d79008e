"""One engine per app, and the two ways to hold a session: reading and writing.

SQLite gets WAL (readers never wait for the writer), a busy timeout, and write
transactions that start with BEGIN IMMEDIATE: a deferred transaction that turns into
a writer can fail at once with SQLITE_BUSY, whereas IMMEDIATE waits its turn.
PostgreSQL connections are pinged before use so a restarted server is survived.
"""

from __future__ import annotations

import fcntl
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x67707530  # any constant: serialises migrations across replicas


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Take transaction control from the driver so that BEGIN is ours to choose.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA cache_size = -65536")
    cursor.close()


def _sqlite_begin(conn) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _close_all(handles: list) -> None:
    while handles:
        handles.pop().close()


class Database:
    """The engine and session factories of one app (or one job process)."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        file = self.url.database if self.is_sqlite else None
        self._write_lock_path = f"{file}.write.lock" if file and file != ":memory:" else None
        self._handles = threading.local()
        self._open_handles: list = []  # every thread's, closed by dispose() or with this object
        weakref.finalize(self, _close_all, self._open_handles)
        self._read = sessionmaker(self.engine)
        self._write = sessionmaker(self.engine.execution_options(sqlite_immediate=True))

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for queries; its transaction ends (rolled back) on exit."""
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite, writers first queue on a file lock: the kernel hands it over the
        moment it is free, whereas SQLite's busy handler sleeps up to 100 ms between
        tries and can keep missing the short gaps a busy writer (the tailer) leaves.
        """
        with self._write_turn(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        if self._write_lock_path is None:
            yield
            return
        handle = getattr(self._handles, "write_lock", None)
        if handle is None:  # one open file per thread, so that the lock excludes threads too
            handle = self._handles.write_lock = open(self._write_lock_path, "a+b")  # noqa: SIM115
            self._open_handles.append(handle)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema up to date with the Alembic migrations.

        Safe when several processes start at once: the migration runs in one
        transaction that holds SQLite's write lock or a PostgreSQL advisory lock.
        """
        with self.engine.execution_options(sqlite_immediate=True).begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config = AlembicConfig()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        _close_all(self._open_handles)
        self._handles = threading.local()
