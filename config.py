"""Settings read from the environment: typed, validated at start, documented here.

`Settings` declares every variable the service reads, each with its default, its parser
and its help text; the README's table mirrors them (a test keeps the two in step).
`load()` reads them all at once and fails with one line naming the variable and what it
accepts. A setting that can be turned off is `None` when off, never 0.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Setting:
    """How one environment variable is read: the metadata of a Settings field."""

    env: str
    default: str
    parse: Callable[[str], Any]
    accepts: str
    help: str
    attr: str = ""


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if value < low or (high is not None and value > high):
            raise ValueError
        return value

    return parse


def _number(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text.strip())
        if not value >= low or value == float("inf"):
            raise ValueError
        return value

    return parse


def _off_or(parse: Callable[[str], float]) -> Callable[[str], float | None]:
    """`0` turns the setting off: None, so no caller can mistake it for a zero window."""

    def parse_or_off(text: str) -> float | None:
        value = parse(text)
        return None if value == 0 else value

    return parse_or_off


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError
    return value


def _database_url(text: str) -> str:
    """A URL the service can open: a SQLite file, or PostgreSQL through psycopg (version 3)."""
    value = text.strip()
    sqlite_file = value.startswith("sqlite:///") and len(value) > len("sqlite:///")
    postgres = value.startswith("postgresql+psycopg://") and len(value) > len("postgresql+psycopg://")
    if not (sqlite_file or postgres):
        raise ValueError
    return value


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text.strip()


def _optional_text(text: str) -> str | None:
    return text.strip() or None


def setting(env: str, default: str, parse: Callable[[str], Any], accepts: str, help: str, secret: bool = False) -> Any:
    """A Settings field: its environment variable, default, parser and documentation."""
    return dataclasses.field(repr=not secret, metadata={"setting": Setting(env, default, parse, accepts, help)})


@dataclass(frozen=True)
class Settings:
    """The parsed settings; build with `load()`, or `load({...})` in tests."""

    host: str = setting(
        "HOST", "0.0.0.0", _text, "an IP address to listen on", "Address gunicorn (and `python wsgi.py`) listens on."
    )
    port: int = setting(
        "PORT", "8080", _integer(1, 65535), "a port from 1 to 65535", "Port gunicorn (and `python wsgi.py`) listens on."
    )
    workers: int = setting("WORKERS", "2", _integer(1, 64), "an integer from 1 to 64", "Gunicorn worker processes.")
    threads: int = setting(
        "THREADS",
        "1",
        _integer(1, 64),
        "an integer from 1 to 64",
        "Requests each worker answers at once. 1 is the fastest for the crawler's small POSTs (no"
        " worker's threads compete for Python's lock); more let a worker go on answering while a"
        " long export or a slow client holds one of its threads.",
    )
    database_url: str = setting(
        "DATABASE_URL",
        "sqlite:///./metrics.db",
        _database_url,
        "sqlite:///PATH (a file) or postgresql+psycopg://USER@HOST:PORT/DATABASE",
        "Where records are stored; a relative SQLite path is relative to the working directory.",
    )
    database_wait_sec: float = setting(
        "DATABASE_WAIT_SEC",
        "60",
        _number(0),
        "a number of seconds of at least 0",
        "How long the start waits for a database that refuses connections (PostgreSQL starting beside it).",
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL", "Log level of the service."
    )
    access_log: bool = setting(
        "ACCESS_LOG", "true", _boolean, "true or false", "One log line per request: method, path, status, duration."
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES",
        str(16 * 1024 * 1024),
        _integer(1024),
        "an integer of at least 1024",
        "Largest request body accepted; larger ones get 413.",
    )
    max_batch: int = setting(
        "MAX_BATCH",
        "10000",
        _integer(1, 1_000_000),
        "an integer from 1 to 1000000",
        "Most records accepted in one POST; more get 413.",
    )
    max_clock_skew_sec: float | None = setting(
        "MAX_CLOCK_SKEW_SEC",
        "3600",
        _off_or(_number(0)),
        "a number of seconds of at least 0 (0 turns the check off)",
        "Records timestamped further ahead of the server's clock than this are rejected.",
    )
    ingest_api_keys: tuple[str, ...] = setting(
        "INGEST_API_KEYS",
        "",
        _list,
        "comma-separated keys",
        "Keys accepted for POST /metrics (X-API-Key or Authorization: Bearer); empty leaves ingest open.",
        secret=True,
    )
    read_api_keys: tuple[str, ...] = setting(
        "READ_API_KEYS",
        "",
        _list,
        "comma-separated keys",
        "When set, keys required to read records, GPUs and stats; /health then says only up or down.",
        secret=True,
    )
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS",
        "",
        _list,
        "comma-separated origins such as https://grafana.example",
        "Browser origins allowed to call the API; empty turns CORS off.",
    )
    enable_ws_file: bool = setting(
        "ENABLE_WS_FILE", "false", _boolean, "true or false", "Tail INPUT_WS_PATH into the database."
    )
    enable_msg_file: bool = setting(
        "ENABLE_MSG_FILE", "false", _boolean, "true or false", "Tail INPUT_MSG_PATH into the database."
    )
    input_ws_path: str = setting(
        "INPUT_WS_PATH", "ws_out.jsonl", _text, "a file path", "JSONL file written by the crawler's web-socket sink."
    )
    input_msg_path: str = setting(
        "INPUT_MSG_PATH", "msg_out.jsonl", _text, "a file path", "JSONL file written by the crawler's message sink."
    )
    file_poll_interval_sec: float = setting(
        "FILE_POLL_INTERVAL_SEC",
        "1.0",
        _number(0.05),
        "a number of seconds of at least 0.05",
        "How often the tailed files are checked for new lines.",
    )
    metrics_retention_hours: float | None = setting(
        "METRICS_RETENTION_HOURS",
        "168",
        _off_or(_number(0)),
        "a number of hours of at least 0 (0 keeps everything)",
        "Records older than this are deleted; 0 turns retention off.",
    )
    span_retention_hours: float | None = setting(
        "SPAN_RETENTION_HOURS",
        "",
        _off_or(_number(0)),
        "a number of hours of at least 0 (0 keeps them for ever), or empty for METRICS_RETENTION_HOURS",
        "gpumon_client's scopes, kernels and processes older than this (by their end) are deleted.",
    )
    rollup_retention_days: float | None = setting(
        "ROLLUP_RETENTION_DAYS",
        "90",
        _off_or(_number(0)),
        "a number of days of at least 0 (0 keeps them for ever)",
        "Minute rollups older than this are deleted; never before their minute's records.",
    )
    stale_after_sec: float = setting(
        "STALE_AFTER_SEC",
        "120",
        _number(1),
        "a number of seconds of at least 1",
        "A GPU silent for longer is marked stale on the dashboard and left out of /prometheus.",
    )
    retention_clean_interval_sec: float = setting(
        "RETENTION_CLEAN_INTERVAL_SEC",
        "3600",
        _number(1),
        "a number of seconds of at least 1",
        "How often retention runs (it also runs once at start).",
    )
    prometheus_multiproc_dir: str | None = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        _optional_text,
        "a folder path, or empty for a private folder per start",
        "Where the gunicorn workers keep their counts for /prometheus (prometheus-client's multiprocess"
        " mode), emptied of its *.db files at every start; one folder per service instance. Run"
        " `python -m gpumetrics import` with the same value to have its counts in /prometheus.",
    )
    scheduler_lock_path: str | None = setting(
        "SCHEDULER_LOCK_PATH",
        "",
        _optional_text,
        "a file path, or empty for files beside the SQLite database",
        "SQLite only: base path of the lock files that let exactly one process run each job.",
    )

    @property
    def tailed_files(self) -> tuple[str, ...]:
        """The JSONL files this host tails, in the order of the settings."""
        enabled = ((self.enable_ws_file, self.input_ws_path), (self.enable_msg_file, self.input_msg_path))
        return tuple(path for on, path in enabled if on)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (already parsed), for tests."""
        return dataclasses.replace(self, **changes)


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(field.metadata["setting"], attr=field.name) for field in dataclasses.fields(Settings)
)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting; raise SettingsError naming the first invalid variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in SETTINGS:
        raw = environ.get(item.env, item.default)
        if item.env in INHERITED and not raw.strip():
            values[item.attr] = values[INHERITED[item.env]]
            continue
        try:
            values[item.attr] = item.parse(raw)
        except ValueError:
            raise SettingsError(f"invalid {item.env}={raw!r}: expected {item.accepts}") from None
    return Settings(**values)


# Settings whose empty value means "as this other one" (declared earlier in Settings).
INHERITED = {"SPAN_RETENTION_HOURS": "metrics_retention_hours"}
