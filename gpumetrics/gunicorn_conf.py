"""gunicorn settings, read from our own settings so one bad variable stops the start.

Used as `gunicorn --config python:gpumetrics.gunicorn_conf wsgi:app`, the command of
`make serve`, the Dockerfile and the end-to-end tests alike.
"""

from __future__ import annotations

import sys

# gunicorn reads every module-level name as a setting, and `config` is one of them.
from config import SettingsError as _SettingsError
from config import load as _load

try:
    _settings = _load()
except _SettingsError as _error:
    sys.exit(f"gpumetrics: {_error}")

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.workers
# Threads let a worker answer /health while another request waits on the database.
worker_class = "gthread"
threads = 4
timeout = 60
graceful_timeout = 20
loglevel = _settings.log_level.lower()
# Several instances may run on one host (tests, replicas); the control socket is one path.
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Every worker competes for each job's lock; exactly one runs each job."""
    from gpumetrics.jobs.scheduler import start_jobs
    from gpumetrics.state import app_state

    state = app_state(worker.wsgi)
    state.jobs = start_jobs(state.settings, state.db)


def worker_exit(server, worker) -> None:
    from gpumetrics.state import app_state

    app = getattr(worker, "wsgi", None)
    jobs = app and app_state(app).jobs
    if jobs is not None:
        jobs.stop()
