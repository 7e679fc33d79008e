"""The app's state, typed, and its accessors: `get_db()` and `get_settings()`, as in Flask's tutorial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from config import Settings

from .db import Database

if TYPE_CHECKING:
    from .jobs.scheduler import Jobs

EXTENSION = "gpumetrics"


@dataclass
class State:
    """What one app holds: its settings, its database, and the jobs this process runs."""

    settings: Settings
    db: Database
    jobs: Jobs | None = None


def init_state(app: Flask, settings: Settings, db: Database) -> State:
    state = app.extensions[EXTENSION] = State(settings, db)
    return state


def app_state(app: Flask | None = None) -> State:
    """The state of `app`, or of the app handling the current request or command."""
    return (app or current_app).extensions[EXTENSION]


def get_db() -> Database:
    return app_state().db


def get_settings() -> Settings:
    return app_state().settings
