"""Everything that differs between SQLite and PostgreSQL, behind one interface.

`backend_for(url)` picks the backend where the engine is made; the rest of the service
asks it, and this is the only module that names a dialect.

SQLite gets WAL (readers never wait for the writer), a busy timeout, and write
transactions that start with BEGIN IMMEDIATE: a deferred transaction that turns into a
writer can fail at once with SQLITE_BUSY, whereas IMMEDIATE waits its turn. Writers
also queue on a file lock first. PostgreSQL connections are pinged before use, so a
restarted server is survived, and rows arrive by COPY.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import threading
import weakref
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Integer, create_engine, delete, event, func, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.functions import Function

from .locks import AdvisoryLock, FileLock, JobLock

# SQLite makes only an INTEGER PRIMARY KEY the rowid alias (fast, auto-increment).
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CHECKPOINT_PAGES = 10_000  # of 4 KiB: the WAL grows to about 40 MB between checkpoints
FEW_ROWS = 20  # PostgreSQL: inserted without the staging table
MIGRATION_LOCK_KEY = 0x67707530  # any constant: serialises migrations across replicas


class Backend:
    """The interface; each method says what the caller may rely on."""

    name: str
    # Retention probes each GPU's oldest row once without locks before the locked pass.
    warm_up_before_locking: bool = False
    # A server reached over the network, worth waiting for while it starts (else a file).
    is_server: bool = False
    # The database's size in bytes, for the service's own metrics.
    size_sql: str = ""

    def __init__(self, url: URL) -> None:
        self.url = url

    def create_engine(self) -> Engine:
        raise NotImplementedError

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """Held around every write transaction: a queue for writers, where one helps."""
        yield

    def lock_migrations(self, connection: Connection) -> None:
        """Serialise schema upgrades of processes that start at once."""

    # The SQL names of the smaller and the larger of two values.
    smaller = "min"
    larger = "max"

    def insert_rows(
        self, connection: Connection, table: str, columns: Sequence[str], rows: list[list[Any]], key: Sequence[str]
    ) -> list[tuple] | None:
        """Insert plain rows, skipping those that conflict with a stored row.

        Returns None when every row was added, else the `key` columns of the rows that were.
        """
        raise NotImplementedError

    def placeholders(self, sql: str) -> str:
        """SQL written with ? placeholders, as the driver wants them."""
        return sql

    def executemany(self, connection: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run `sql` (with ? placeholders) once per row, on the driver: the hot path's small writes."""
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.executemany(self.placeholders(sql), rows)
        finally:
            cursor.close()

    def fetch(self, connection: Connection, sql: str, row: Sequence[Any]) -> list[tuple]:
        """Run `sql` (with ? placeholders) once, on the driver; its rows. For the hot path's
        small reads, which SQLAlchemy would cost more to build than the database to answer."""
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.execute(self.placeholders(sql), row)
            return [tuple(found) for found in cursor.fetchall()]
        finally:
            cursor.close()

    def execute_count(self, connection: Connection, sql: str, row: Sequence[Any]) -> int:
        """Run `sql` (with ? placeholders) once, on the driver; returns the rows it changed."""
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.execute(self.placeholders(sql), row)
            return cursor.rowcount
        finally:
            cursor.close()

    def lock_hosts(self, conn: Connection, hosts: Iterable[str]) -> None:
        """Serialise writers of one host's GPUs across replicas, in a fixed order."""

    def sum(self, column: Any) -> Function:
        return func.sum(column)

    def delete_oldest(self, conn: Connection, table: Any, cutoff: int, batch: int) -> int:
        """Delete up to `batch` rows of `table` with ts < cutoff, oldest first."""
        oldest = select(table.c.id).where(table.c.ts < cutoff).order_by(table.c.ts).limit(batch)
        return conn.execute(delete(table).where(table.c.id.in_(oldest.scalar_subquery()))).rowcount

    def delete_ids(self, conn: Connection, table: str, ids_sql: str, params: dict[str, Any]) -> int:
        """Delete the rows of `table` whose id the query `ids_sql` (bound `params`) yields."""
        return conn.execute(text(f"DELETE FROM {table} WHERE id IN ({ids_sql})"), params).rowcount

    def job_lock(self, name: str, lock_path: str | None) -> JobLock:
        """The lock that lets exactly one process of the deployment run job `name`."""
        raise NotImplementedError

    def dispose(self) -> None:
        """Release what the backend holds beside the engine."""


class SqliteBackend(Backend):
    name = "sqlite"
    size_sql = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        file = url.database
        self.file = Path(file) if file and file != ":memory:" else None
        self._handles = threading.local()
        self._open: list = []  # every thread's lock file, closed by dispose() or with this object
        weakref.finalize(self, _close_all, self._open)

    def create_engine(self) -> Engine:
        engine = create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """Writers queue on a file lock beside the database.

        The kernel hands it over the moment it is free, whereas SQLite's busy handler
        sleeps up to 100 ms between tries and can keep missing the short gaps a busy
        writer (the tailer) leaves.
        """
        if self.file is None:
            yield
            return
        handle = getattr(self._handles, "write_lock", None)
        if handle is None:  # one open file per thread, so that the lock excludes threads too
            handle = self._handles.write_lock = open(f"{self.file}.write.lock", "a+b")  # noqa: SIM115
            self._open.append(handle)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def insert_rows(
        self, connection: Connection, table: str, columns: Sequence[str], rows: list[list[Any]], key: Sequence[str]
    ) -> list[tuple] | None:
        """One executemany on the driver: SQLAlchemy's per-row work would cost more than SQLite's insert.

        New rows get ids above the table's largest (SQLite's rowid rule, under the write
        lock), which finds the added ones when some were not.
        """
        names = ", ".join(f'"{name}"' for name in columns)
        markers = ", ".join("?" * len(columns))
        cursor = connection.connection.driver_connection.cursor()
        try:
            before = cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({markers}) ON CONFLICT DO NOTHING", rows)
            if cursor.rowcount == len(rows):
                return None
            return cursor.execute(f"SELECT {', '.join(key)} FROM {table} WHERE id > ?", (before,)).fetchall()
        finally:
            cursor.close()

    def sum(self, column: Any) -> Function:
        return func.total(column)  # a float sum: SQLite's integer sum() raises on overflow

    def job_lock(self, name: str, lock_path: str | None) -> JobLock:
        if lock_path:
            base = Path(lock_path)
        elif self.file is not None:
            base = self.file.absolute()
        else:
            digest = hashlib.sha1(str(self.url).encode()).hexdigest()[:12]
            base = Path(tempfile.gettempdir()) / f"gpumetrics-{digest}"
        return FileLock(base.with_name(f"{base.name}.{name}.lock"))

    def dispose(self) -> None:
        _close_all(self._open)
        self._handles = threading.local()


class PostgresBackend(Backend):
    name = "postgresql"
    warm_up_before_locking = True  # its deleted rows' index entries stay until vacuum
    is_server = True
    # The whole database's files: a few stat calls, where summing each table's relations opens them all.
    size_sql = "SELECT pg_database_size(current_database())"

    def create_engine(self) -> Engine:
        return create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 5})

    def lock_migrations(self, connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})

    smaller = "LEAST"
    larger = "GREATEST"

    def insert_rows(
        self, connection: Connection, table: str, columns: Sequence[str], rows: list[list[Any]], key: Sequence[str]
    ) -> list[tuple] | None:
        """COPY into a session-local staging table, then one INSERT ... SELECT ... RETURNING.

        1.5 times the rate of executemany (measured when it was chosen), and as idempotent.
        A few rows (the crawler's one line a POST) go in one INSERT ... VALUES instead: the
        staging table's truncate costs more than they do.
        """
        names = ", ".join(columns)
        returning = f"ON CONFLICT DO NOTHING RETURNING {', '.join(key)}"
        with connection.connection.driver_connection.cursor() as cursor:
            if len(rows) <= FEW_ROWS:
                values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
                cursor.execute(
                    f"INSERT INTO {table} ({names}) VALUES {values} {returning}",
                    [value for row in rows for value in row],
                )
                added = cursor.fetchall()
            else:
                staging = f"{table}_staging"
                cursor.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                    f"SELECT {names} FROM {table} WITH NO DATA"
                )
                with cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} {returning}")
                added = cursor.fetchall()
                cursor.execute(f"TRUNCATE {staging}")  # the same transaction may insert again
        return None if len(added) == len(rows) else added

    def placeholders(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def lock_hosts(self, conn: Connection, hosts: Iterable[str]) -> None:
        for host in sorted(set(hosts)):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(host.encode())})

    def delete_oldest(self, conn: Connection, table: Any, cutoff: int, batch: int) -> int:
        # PostgreSQL plans `id IN (subquery)` as a scan of the whole table, each batch;
        # `id = ANY(ARRAY(subquery))` walks the ts index (26 times faster, bench/retention.py).
        sql = f"DELETE FROM {table.name} WHERE id = ANY(ARRAY(SELECT id FROM {table.name} WHERE ts < :cutoff ORDER BY ts LIMIT :n))"  # noqa: E501
        return conn.execute(text(sql), {"cutoff": cutoff, "n": batch}).rowcount

    def delete_ids(self, conn: Connection, table: str, ids_sql: str, params: dict[str, Any]) -> int:
        # `id IN (subquery)` is planned as a scan of the whole table each batch; `= ANY(ARRAY(...))` is not.
        return conn.execute(text(f"DELETE FROM {table} WHERE id = ANY(ARRAY({ids_sql}))"), params).rowcount

    def job_lock(self, name: str, lock_path: str | None) -> JobLock:
        return AdvisoryLock(self.url.render_as_string(hide_password=False), name)


def backend_for(url: URL) -> Backend:
    """The backend of a database URL (the settings accept only these two)."""
    return SqliteBackend(url) if url.get_backend_name() == "sqlite" else PostgresBackend(url)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Take transaction control from the driver so that BEGIN is ours to choose.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # A checkpoint every 40 MB of WAL, not 4 MB: the pages every write touches (index leaves,
    # a host's clock, a name's summary) are copied back once per checkpoint, not ten times.
    cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA cache_size = -65536")
    cursor.close()


def _sqlite_begin(conn) -> None:
    # On the driver: SQLAlchemy's own execute would cost more than the BEGIN (a third of an empty write).
    writing = conn.get_execution_options().get("writing", False)
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if writing else "BEGIN")


def _close_all(handles: list) -> None:
    while handles:
        handles.pop().close()
