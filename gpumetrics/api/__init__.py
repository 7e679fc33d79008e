"""The HTTP API: one flask-smorest Blueprint per resource, and the docs pages."""

from __future__ import annotations

import logging

from flask import Flask, redirect
from flask_smorest import Api
from sqlalchemy.exc import DBAPIError

from .. import API_DESCRIPTION
from . import gpus, health, metrics, stats

log = logging.getLogger(__name__)


def register(app: Flask) -> Api:
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}})
    for module in (metrics, gpus, stats, health):
        api.register_blueprint(module.blp)
    metrics.document_records(api.spec)

    @app.get("/")
    def index():
        return redirect("/docs")

    @app.get("/favicon.ico")
    def favicon():
        return app.send_static_file("vendor/swagger-ui/favicon-32x32.png")

    @app.errorhandler(DBAPIError)
    def database_unavailable(error: DBAPIError):
        log.error("database error: %s", str(error.orig).splitlines()[0] if error.orig else error)
        body = {"code": 503, "status": "Service Unavailable", "message": "The database is unavailable; try again."}
        return body, 503, {"Retry-After": "5"}

    return api
