"""gpumetrics: stores the GPU metrics a fleet's crawlers send, and answers for them."""

from __future__ import annotations

from flask import Flask

import config
from config import Settings

from .db import Database
from .state import init_state

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, database (schema brought up to date), API, docs, access log.

    The schema check costs one read when the schema is current (gunicorn's master has
    already migrated it before forking), so every worker may make its own app.
    """
    from . import api, startup
    from .http import access

    settings = settings or config.load()
    startup.configure_logging(settings)
    app = Flask(__name__)
    database = Database(settings.database_url)
    database.upgrade()
    init_state(app, settings, database)
    api.register(app, settings)
    if settings.access_log:
        access.register(app)
    return app
