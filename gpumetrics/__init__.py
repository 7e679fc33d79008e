"""gpumetrics: stores the GPU metrics a fleet's crawlers send, and answers for them."""

from __future__ import annotations

import logging

from flask import Flask

import config
from config import Settings

from .db import Database
from .state import init_state

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, database (schema brought up to date), API and docs."""
    settings = settings or config.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    database = Database(settings.database_url)
    database.upgrade()
    init_state(app, settings, database)

    from . import api, cli

    api.register(app, settings)
    cli.register(app)
    return app
