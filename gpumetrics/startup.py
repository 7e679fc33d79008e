"""Start-up: settings, logging and the database, checked once, and any failure told in one line.

Without this, a folder that does not exist, a volume the service's user cannot write or
a PostgreSQL server not up yet ends in a traceback per gunicorn worker, which an
operator must read to the bottom to learn which setting is wrong. Every entry point
(gunicorn's master in gunicorn_conf.py, `python wsgi.py`, `python -m gpumetrics`) runs
`prepare()` before any worker or command starts, inside `one_line()`, which turns a
StartupError into `gpumetrics: <setting>=<value>: <what is wrong>; <what to do>` on stderr
and a non-zero exit status.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.util import CommandError
from flask import Flask
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

import config
from config import Settings

from . import __version__
from .db import Database
from .db.backends import backend_for

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RETRY_EVERY_SEC = 2.0
# gunicorn's WORKER_BOOT_ERROR: its master stops instead of forking the same failure again.
WORKER_BOOT_ERROR = 3
# What PostgreSQL says when waiting cannot help: the URL itself is wrong.
# The password of a URL in a message (an invalid DATABASE_URL is shown as it was given).
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_FINAL = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied", "password")


class StartupError(Exception):
    """Why the service cannot start: one line naming the setting, its value and what to do."""


@contextmanager
def one_line(code: int = 1) -> Iterator[None]:
    """End the process with one line on stderr and status `code` for a bad setting or database."""
    try:
        yield
    except (StartupError, config.SettingsError) as error:
        print("gpumetrics:", _PASSWORD.sub(r"\1***@", str(error)), file=sys.stderr, flush=True)
        sys.exit(code)


def load_settings() -> Settings:
    try:
        return config.load()
    except config.SettingsError as error:
        raise StartupError(str(error)) from None


def configure_logging(settings: Settings) -> None:
    """LOG_LEVEL for the service; the libraries' routine lines (APScheduler's every run,
    Alembic's every check) only at DEBUG, so that an idle service is silent at INFO."""
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    quiet = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    for name in ("apscheduler", "alembic"):
        logging.getLogger(name).setLevel(quiet)


def bind_address(settings: Settings) -> str:
    """HOST:PORT as gunicorn takes it (an IPv6 address in brackets); a HOST that names no
    address of this machine is a bad setting."""
    try:
        literal = ipaddress.ip_address(settings.host)
    except ValueError:
        try:
            socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError):
            raise StartupError(
                f"invalid HOST={settings.host!r}: expected an IP address to listen on (0.0.0.0, 127.0.0.1, ::)"
            ) from None
        return f"{settings.host}:{settings.port}"
    return f"[{literal}]:{settings.port}" if literal.version == 6 else f"{literal}:{settings.port}"


def prepare(settings: Settings) -> str:
    """Check the database, waiting for it if it refuses connections, and bring its schema
    up to date; return one line saying what was done."""
    url = make_url(settings.database_url)
    if not backend_for(url).is_server:
        check_sqlite_folder(settings, url)
    db = Database(settings.database_url)
    try:
        wait_for_database(db, settings)
        before = db.upgrade()
        after = db.revision()
    except (SQLAlchemyError, CommandError) as error:
        raise StartupError(database_problem(settings, error)) from None
    finally:
        db.dispose()
    if before == after:
        return f"database schema at revision {after}"
    return f"database schema at revision {after} (upgraded from {before or 'an empty database'})"


def announce(settings: Settings, done: str) -> None:
    """The one line a start logs of its own: the version, the database and what was done to it."""
    log.info("gpumetrics %s, DATABASE_URL=%s: %s", __version__, shown(settings), done)


def build_app(settings: Settings) -> Flask:
    """create_app, with a database failure told as a StartupError (a worker's own start)."""
    from . import create_app

    try:
        return create_app(settings)
    except (SQLAlchemyError, CommandError) as error:
        raise StartupError(database_problem(settings, error)) from None


def shown(settings: Settings) -> str:
    """DATABASE_URL as it may be logged: without its password."""
    return make_url(settings.database_url).render_as_string(hide_password=True)


def check_sqlite_folder(settings: Settings, url: URL) -> None:
    """The folder must exist and be writable: SQLite keeps its journal (-wal, -shm) there,
    and the service its write lock and job locks (metrics.db.write.lock, ...)."""
    path = Path(url.database or "").absolute()
    folder, uid = path.parent, os.geteuid()
    setting = f"DATABASE_URL={shown(settings)}"
    try:
        os.stat(folder)
    except FileNotFoundError:
        raise StartupError(
            f"{setting}: the folder {folder} does not exist; create it, or name a file in an existing folder"
        ) from None
    except OSError as error:
        raise StartupError(f"{setting}: user id {uid} cannot reach the folder {folder} ({error.strerror})") from None
    if not folder.is_dir():
        raise StartupError(f"{setting}: {folder} is not a folder; name a file in a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(
            f"{setting}: user id {uid} cannot write in the folder {folder}, where SQLite keeps the database, its "
            f"journal and lock files; make it writable by that user (chown {uid} {folder}) or name another folder"
        )
    if path.is_dir():
        raise StartupError(f"{setting}: {path} is a folder; name a file in it, such as {path / 'metrics.db'}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(
            f"{setting}: user id {uid} cannot write the database file {path}; "
            f"make it writable by that user (chown {uid} {path})"
        )


def wait_for_database(db: Database, settings: Settings) -> None:
    """Try to connect until the database answers or DATABASE_WAIT_SEC has passed, logging
    each failed attempt; a SQLite file or a PostgreSQL answer such as "no such database"
    fails at once, since waiting cannot mend it."""
    deadline = time.monotonic() + settings.database_wait_sec
    attempt = 0
    while True:
        attempt += 1
        try:
            db.ping()
            return
        except OperationalError as error:
            left = deadline - time.monotonic()
            reason = _reason(error)
            if not db.backend.is_server or any(word in reason for word in _FINAL) or left <= 0:
                raise
            log.warning(
                "database %s: attempt %d: %s; trying again for up to %.0f s (DATABASE_WAIT_SEC=%g)",
                shown(settings),
                attempt,
                reason,
                left,
                settings.database_wait_sec,
            )
            time.sleep(min(RETRY_EVERY_SEC, left))


def database_problem(settings: Settings, error: Exception) -> str:
    """The one line for a database that cannot be used: what it said, and what to do."""
    setting = f"DATABASE_URL={shown(settings)}"
    if isinstance(error, CommandError):
        return f"{setting}: {error}; the database was made by a newer gpumetrics: run that version, or another database"
    reason = _reason(error)
    if not backend_for(make_url(settings.database_url)).is_server:
        return f"{setting}: SQLite cannot use the file: {reason}; name a gpumetrics database file or a new one"
    if not isinstance(error, OperationalError) or any(word in reason for word in _FINAL):
        return f"{setting}: PostgreSQL answered: {reason}; correct DATABASE_URL or the server"
    return (
        f"{setting}: PostgreSQL did not accept a connection within DATABASE_WAIT_SEC={settings.database_wait_sec:g} s "
        f"({reason}); start it, correct the host and port, or wait longer with DATABASE_WAIT_SEC"
    )


def _reason(error: Exception) -> str:
    """The driver's message, short: `Connection refused`, `database "x" does not exist`."""
    original = getattr(error, "orig", None) or error
    text = (str(original).strip().splitlines() or [type(original).__name__])[0]
    text = text.removeprefix("connection failed: ")
    if text.startswith("connection to server at ") and " failed: " in text:
        text = text.split(" failed: ", 1)[1]
    return text.removeprefix("FATAL:").strip()
