"""Settings read from the environment: typed, validated at start, documented here.

SETTINGS is the single list of every variable the service reads; the README's table
mirrors it (a test keeps the two in step). `load()` reads them all at once and fails
with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    parse: Callable[[str], Any]
    accepts: str
    help: str

    @property
    def attr(self) -> str:
        return self.env.lower()


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
    value = text.strip()
    if not value.startswith(("sqlite://", "postgresql")):
        raise ValueError
    return value


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text.strip()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "PORT", "8080", _integer(1, 65535), "a port from 1 to 65535", "Port gunicorn (and `python wsgi.py`) listens on."
    ),
    Setting("WORKERS", "2", _integer(1, 64), "an integer from 1 to 64", "Gunicorn worker processes."),
    Setting(
        "DATABASE_URL",
        "sqlite:///./metrics.db",
        _database_url,
        "a sqlite:/// or postgresql+psycopg:// URL",
        "Where records are stored; a relative SQLite path is relative to the working directory.",
    ),
    Setting("LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL", "Log level of the service."),
    Setting(
        "MAX_BODY_BYTES",
        str(16 * 1024 * 1024),
        _integer(1024),
        "an integer of at least 1024",
        "Largest request body accepted; larger ones get 413.",
    ),
    Setting(
        "MAX_BATCH",
        "10000",
        _integer(1, 1_000_000),
        "an integer from 1 to 1000000",
        "Most records accepted in one POST; more get 413.",
    ),
    Setting(
        "INGEST_API_KEYS",
        "",
        _list,
        "comma-separated keys",
        "Keys accepted for POST /metrics (X-API-Key or Authorization: Bearer); empty leaves ingest open.",
    ),
    Setting(
        "READ_API_KEYS",
        "",
        _list,
        "comma-separated keys",
        "When set, keys required to read records, GPUs and stats; /health then says only up or down.",
    ),
    Setting(
        "CORS_ORIGINS",
        "",
        _list,
        "comma-separated origins such as https://grafana.example",
        "Browser origins allowed to call the API; empty turns CORS off.",
    ),
    Setting("ENABLE_WS_FILE", "false", _boolean, "true or false", "Tail INPUT_WS_PATH into the database."),
    Setting("ENABLE_MSG_FILE", "false", _boolean, "true or false", "Tail INPUT_MSG_PATH into the database."),
    Setting(
        "INPUT_WS_PATH", "ws_out.jsonl", _text, "a file path", "JSONL file written by the crawler's web-socket sink."
    ),
    Setting(
        "INPUT_MSG_PATH", "msg_out.jsonl", _text, "a file path", "JSONL file written by the crawler's message sink."
    ),
    Setting(
        "FILE_POLL_INTERVAL_SEC",
        "1.0",
        _number(0.05),
        "a number of seconds of at least 0.05",
        "How often the tailed files are checked for new lines.",
    ),
    Setting(
        "METRICS_RETENTION_HOURS",
        "168",
        _number(0),
        "a number of hours of at least 0 (0 keeps everything)",
        "Records older than this are deleted; 0 turns retention off.",
    ),
    Setting(
        "RETENTION_CLEAN_INTERVAL_SEC",
        "3600",
        _number(1),
        "a number of seconds of at least 1",
        "How often retention runs (it also runs once at start).",
    ),
    Setting(
        "SCHEDULER_LOCK_PATH",
        "",
        str,
        "a file path, or empty for files beside the SQLite database",
        "SQLite only: base path of the lock files that let exactly one process run each job.",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The parsed settings; build with `load()`, or `load({...})` in tests."""

    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(self.values)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return Settings({**self.values, **changes})


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting; raise SettingsError naming the first invalid variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env, setting.default)
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError:
            raise SettingsError(f"invalid {setting.env}={raw!r}: expected {setting.accepts}") from None
    return Settings(values)
