"""The HTTP API: one flask-smorest Blueprint per resource, and the docs pages."""

from __future__ import annotations

from flask import Flask, redirect, render_template
from flask_smorest import Api

from config import Settings

from .. import API_DESCRIPTION, auth, errors, headers
from . import gpus, health, metrics, stats


def register(app: Flask, settings: Settings) -> Api:
    errors.register(app)
    auth.register(app, settings)
    headers.register(app, settings)
    api = errors.ApiWithOneErrorFormat(app, spec_kwargs={"info": {"description": API_DESCRIPTION}})
    for module in (metrics, gpus, stats, health):
        api.register_blueprint(module.blp)
    metrics.document_records(api.spec)
    auth.document(api.spec, settings)

    @app.get("/")
    def index():
        return redirect("/docs")

    # Our own pages rather than flask-smorest's: theirs start Swagger UI with an inline
    # script, which the docs pages' Content-Security-Policy forbids.
    @app.get("/docs")
    def swagger_ui():
        return render_template("swagger_ui.html")

    @app.get("/redoc")
    def redoc():
        return render_template("redoc.html")

    @app.get("/favicon.ico")
    def favicon():
        return app.send_static_file("vendor/swagger-ui/favicon-32x32.png")

    return api
