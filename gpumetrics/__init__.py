"""gpumetrics: stores the GPU metrics a fleet's crawlers send, and answers for them."""

from __future__ import annotations

import logging

from flask import Flask, current_app

import config
from config import Settings

from .db import Database

__version__ = "0.1.0"

API_DESCRIPTION = """
Stores the samples that the GPU metrics crawler takes from NVML on every host, and
answers operators and dashboards.

* **Ingest**: `POST /metrics` takes one record or an array of records.
* **Read**: `GET /metrics` pages through records or computes one aggregate;
  `GET /gpus` lists the GPUs; `GET /stats` summarises each GPU and kind.
* Times are ISO 8601; without an offset they are UTC. Answers are always UTC, ending in `Z`.
"""


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, database (schema created if missing), API and docs."""
    settings = settings or config.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="gpumetrics",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    database = Database(settings.database_url)
    database.upgrade()
    app.extensions["gpumetrics"] = {"settings": settings, "db": database}

    from . import api, cli

    api.register(app, settings)
    cli.register(app)
    return app


def current_db() -> Database:
    return current_app.extensions["gpumetrics"]["db"]


def current_settings() -> Settings:
    return current_app.extensions["gpumetrics"]["settings"]
