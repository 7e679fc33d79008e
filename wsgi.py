"""The WSGI entry point: `gunicorn wsgi:app`, or `python wsgi.py` for a quick local run."""

from __future__ import annotations

import sys

import config
from gpumetrics import create_app

try:
    settings = config.load()
except config.SettingsError as error:
    sys.exit(f"gpumetrics: {error}")

app = create_app(settings)

if __name__ == "__main__":
    from gpumetrics.jobs.scheduler import start_jobs
    from gpumetrics.state import app_state

    app_state(app).jobs = start_jobs(settings, app_state(app).db)
    app.run(host="0.0.0.0", port=settings.port)
