"""/health: is the service up, does its database answer, and what do its jobs report."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from ..http.auth import may_read
from ..jobs.scheduler import job_names
from ..state import get_db, get_settings
from ..store import jobs
from .schemas import Health

EXAMPLE = {
    "status": "ok",
    "database": "ok",
    "version": "0.1.0",
    "jobs": {
        "runners": {"tail": "node-1:4242", "retention": "node-1:4242"},
        "files": {
            "/data/ws_out.jsonl": {
                "linesRead": 120000,
                "recordsStored": 480000,
                "duplicates": 0,
                "linesRejected": 2,
                "bytesBehind": 0,
                "state": "ok",
            }
        },
        "retention": {"retentionHours": 168, "lastRun": None},
    },
}
blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness.")
log = logging.getLogger(__name__)


@blp.route("")
class HealthCheck(MethodView):
    @blp.response(200, Health, description="The service and its database answer.", example=EXAMPLE)
    @blp.alt_response(503, schema=Health, description="The database does not answer; `database` says why.")
    def get(self):
        """Report whether the service and its database answer."""
        try:
            get_db().ping()
        except SQLAlchemyError as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            log.warning("health: database down: %s", reason)
            retry = {"Retry-After": "5"}
            if not may_read():
                return {"status": "down"}, 503, retry
            return {"status": "down", "database": reason, "version": __version__}, 503, retry
        if not may_read():
            return {"status": "ok"}
        return {"status": "ok", "database": "ok", "version": __version__, "jobs": _jobs()}


def _jobs() -> dict:
    """What the jobs recorded in the database, so that every worker of every replica can answer."""
    settings = get_settings()
    host = socket.gethostname()
    with get_db().reading() as conn:
        runners = jobs.runners(conn)
        keys = [str(Path(path).absolute()) for path in settings.tailed_files]
        files = {key: jobs.file_report(conn, host, key) for key in keys}
        last_retention = jobs.last_run(conn, "retention")
    return {
        "runners": {name: runners.get(name) for name in job_names(settings)},
        "files": files,
        "retention": {"retentionHours": settings.metrics_retention_hours, "lastRun": last_retention},
    }
