"""gpumetrics: stores the GPU metrics a fleet's crawlers send, and answers for them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from flask import Flask

import config
from config import Settings

from .db import Database
from .state import init_state

__version__ = "0.1.0"


class App(Flask):
    """Flask, asking once per function whether it is a coroutine function.

    Flask asks on every request, for each of a request's hooks and for its view (a
    method of a new view object each time): about a sixteenth of a one-event POST, and
    the answer never changes. Keyed by the plain function, so the cache stays as small
    as the app's code.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._is_async: dict[Callable, bool] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        plain = getattr(func, "__func__", func)
        if not inspect.isfunction(plain):  # a partial, a callable object: as Flask does
            return super().ensure_sync(func)
        is_async = self._is_async.get(plain)
        if is_async is None:
            is_async = self._is_async[plain] = inspect.iscoroutinefunction(plain)
        return self.async_to_sync(func) if is_async else func


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, database (schema brought up to date), API, docs, access log.

    The schema check costs one read when the schema is current (gunicorn's master has
    already migrated it before forking), so every worker may make its own app.
    """
    from . import api, startup
    from .http import access

    settings = settings or config.load()
    startup.configure_logging(settings)
    app = App(__name__)
    database = Database(settings.database_url)
    database.upgrade()
    init_state(app, settings, database)
    api.register(app, settings)
    if settings.access_log:
        access.register(app)
    return app
