"""The docs pages: Swagger UI at /docs and ReDoc at /redoc, served from the repo's own files.

Our own pages rather than flask-smorest's: theirs load from a CDN and start Swagger UI
with an inline script, which the pages' Content-Security-Policy forbids.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template

blp = Blueprint("docs", __name__)


@blp.get("/")
def index():
    return redirect("/docs")


@blp.get("/docs")
def swagger_ui():
    return render_template("swagger_ui.html")


@blp.get("/redoc")
def redoc():
    return render_template("redoc.html")


@blp.get("/favicon.ico")
def favicon():
    return current_app.send_static_file("vendor/swagger-ui/favicon-32x32.png")
