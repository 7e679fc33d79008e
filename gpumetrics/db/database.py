"""One engine per app (or job process), and the two ways to hold a connection: reading and writing.

Transactions are scoped here, outside the store functions that use them: one per request
or per job batch. The backend (backends.py) supplies what differs between databases.
Store functions get a Core Connection, not an ORM Session: there are no mapped classes,
and a Session's bookkeeping cost more than the write of one event (bench/events.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

from .backends import Backend, backend_for
from .locks import JobLock

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """The engine, its backend and the two kinds of connection."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.backend: Backend = backend_for(self.url)
        self.engine: Engine = self.backend.create_engine()
        # Store functions find the backend in the connection they are given (db.backend_of).
        self._read = self.engine.execution_options(backend=self.backend)
        self._write = self._read.execution_options(writing=True)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for queries; its transaction ends (rolled back) on exit."""
        with self._read.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection whose transaction commits on success and rolls back on error."""
        with self.backend.write_turn(), self._write.begin() as conn:
            yield conn

    def upgrade(self, revision: str = "head") -> str | None:
        """Bring the schema up to date with the Alembic migrations; return the revision it was at.

        A schema already at the target costs one read and no lock, so every worker may
        call this at start. Otherwise the migration runs in one write transaction under
        the backend's migration lock, safe when several processes start at once.
        """
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        target = ScriptDirectory.from_config(config).get_current_head() if revision == "head" else revision
        before = self.revision()
        if before == target:
            return before
        with self.engine.execution_options(writing=True).begin() as conn:
            self.backend.lock_migrations(conn)
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return before

    def revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def job_lock(self, name: str, lock_path: str | None = None) -> JobLock:
        return self.backend.job_lock(name, lock_path)

    def dispose(self) -> None:
        self.engine.dispose()
        self.backend.dispose()
