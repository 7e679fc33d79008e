"""The WSGI entry point: `gunicorn wsgi:app` (each worker imports it), or `python wsgi.py` for a quick local run.

Under gunicorn the master (gpumetrics/gunicorn_conf.py) has checked the settings and the
database before forking, so a worker only builds its app; should that still fail, the
worker says so in one line and exits with gunicorn's boot-error status, which stops the
master rather than making it fork the same failure again. `python wsgi.py` does the
master's checks itself.
"""

from __future__ import annotations

from werkzeug.serving import WSGIRequestHandler

from gpumetrics import startup


class _QuietHandler(WSGIRequestHandler):
    """The service logs each request itself (ACCESS_LOG); werkzeug's line would repeat it."""

    def log_request(self, code="-", size="-") -> None:
        pass


def main() -> None:
    from gpumetrics.jobs.scheduler import start_jobs
    from gpumetrics.state import app_state

    with startup.one_line():
        settings = startup.load_settings()
        startup.bind_address(settings)
        startup.configure_logging(settings)
        startup.announce(settings, startup.prepare(settings))
        app = startup.build_app(settings)
    app_state(app).jobs = start_jobs(settings, app_state(app).db)
    app.run(host=settings.host, port=settings.port, request_handler=_QuietHandler)


if __name__ == "__main__":
    main()
else:
    with startup.one_line(code=startup.WORKER_BOOT_ERROR):
        app = startup.build_app(startup.load_settings())
