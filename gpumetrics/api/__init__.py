"""The HTTP API: one flask-smorest Blueprint per resource, plus the docs pages."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from config import Settings

from .. import __version__, observe
from ..http import auth, errors, headers
from . import dashboard, docs, gpus, health, metrics, openapi, prometheus, series, spans, stats

API_DESCRIPTION = """
Stores the samples that the GPU metrics crawler takes from NVML on every host, and
answers operators and dashboards.

* **Ingest**: `POST /metrics` takes one record or an array of records.
* **Read**: `GET /metrics` pages through records, `GET /metrics/aggregate` computes one
  aggregate over them; `GET /metrics/series` buckets them for charts, `GET /metrics/latest`
  gives the fleet's newest values, `GET /metrics/export` streams them all as NDJSON or CSV;
  `GET /gpus` lists the GPUs; `GET /stats` summarises each GPU and kind.
* **gpumon_client's events**: `GET /spans` lists scopes and kernel launches,
  `GET /spans/summary` sums them by name, `GET /processes` lists the processes.
* **Prometheus**: `GET /prometheus` gives the fleet's newest values in dcgm-exporter's
  names, and the service's own metrics.
* Times are ISO 8601; without an offset they are UTC. Answers are always UTC, ending in `Z`.
"""


def register(app: Flask, settings: Settings) -> Api:
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="gpumetrics",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    errors.register(app)
    headers.register(app, settings)
    auth.warn_if_open(settings)
    plugins = [auth.KeysPlugin(settings), openapi.DocumentPlugin()]
    spec_kwargs = {"info": {"description": API_DESCRIPTION}, "extra_plugins": plugins}
    api = errors.ApiWithOneErrorFormat(app, spec_kwargs=spec_kwargs)
    metrics.document_records(api.spec)
    for module in (metrics, series, gpus, stats, spans, health, prometheus):
        api.register_blueprint(module.blp)
    openapi.drop_unused_schemas(api.spec)
    app.register_blueprint(docs.blp)
    observe.register(app, settings.tailed_files)
    app.register_blueprint(dashboard.blp)
    return api
