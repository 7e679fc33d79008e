"""gunicorn settings, read from our own, and the start-up checks done once in the master.

Used as `gunicorn --config python:gpumetrics.gunicorn_conf wsgi:app`, the command of
`make serve`, the Dockerfile and the end-to-end tests alike. gunicorn's master imports
this module before it forks a worker, so a bad setting, a database that cannot be used
or one that is not up yet is dealt with here, once: one line and a non-zero exit
instead of a traceback per worker. The migrations run here too; the workers find the
schema current. The open-ingest warning is given here, and the workers inherit that it
was.
"""

from __future__ import annotations

import os as _os
import shutil as _shutil
import tempfile as _tempfile

from gpumetrics import startup as _startup
from gpumetrics.http.auth import warn_if_open as _warn_if_open

_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_folder(given: str | None) -> tuple[str, bool]:
    """Where every worker counts its metrics (gpumetrics/observe.py), and whether it is ours to remove.

    PROMETHEUS_MULTIPROC_DIR when set, emptied of an earlier start's files; else a private
    folder for this start. Set in the environment here, before any worker imports
    prometheus-client, which reads it once, at import.
    """
    if not given:
        folder = _tempfile.mkdtemp(prefix="gpumetrics-metrics-")
    else:
        try:
            _os.makedirs(given, exist_ok=True)
            for name in _os.listdir(given):
                if name.endswith(".db"):  # prometheus-client's files; nothing else is touched
                    _os.unlink(_os.path.join(given, name))
        except OSError as error:
            raise _startup.StartupError(
                f"{_METRICS_ENV}={given}: {error.strerror}; name a folder the service's user can write, or unset it"
            ) from None
        folder = given
    _os.environ[_METRICS_ENV] = folder
    return folder, not given


with _startup.one_line():
    _settings = _startup.load_settings()
    _metrics_dir, _metrics_dir_is_private = _metrics_folder(_settings.prometheus_multiproc_dir)
    bind = _startup.bind_address(_settings)
    _startup.configure_logging(_settings)
    _startup.announce(_settings, _startup.prepare(_settings))
_warn_if_open(_settings)

workers = _settings.workers
# gthread, sharing new connections out by how busy each worker is (gpumetrics/worker.py).
worker_class = "gpumetrics.worker.BalancedThreadWorker"
threads = _settings.threads
timeout = 60
# `docker stop` sends SIGTERM and kills 10 s later: in-flight requests get 8 s to finish,
# and the master the rest to exit cleanly.
graceful_timeout = 8
loglevel = _settings.log_level.lower()
# The service writes its own access log (ACCESS_LOG, gpumetrics/http/access.py).
accesslog = None
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


def child_exit(server, worker) -> None:
    """A dead worker's live gauges go (observe.py keeps none today); its counts stay, counted.
    Its connection slot is free for the worker that replaces it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)
    worker.release()


def on_exit(server) -> None:
    if _metrics_dir_is_private:
        _shutil.rmtree(_metrics_dir, ignore_errors=True)
