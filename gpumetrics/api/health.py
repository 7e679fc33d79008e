"""/health: is the service up, and does its database answer."""

from __future__ import annotations

import logging

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__, current_db, current_settings
from ..auth import key_is_valid
from ..jobs import retention
from ..jobs.tail import load_checkpoint
from ..scheduler import job_locks, tailers
from ..schemas import Health

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness.")
log = logging.getLogger(__name__)


@blp.route("")
class HealthCheck(MethodView):
    @blp.response(200, Health, description="The service and its database answer.")
    @blp.alt_response(503, schema=Health, description="The database does not answer; `database` says why.")
    def get(self):
        """Report whether the service and its database answer."""
        try:
            current_db().ping()
        except SQLAlchemyError as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            log.warning("health: database down: %s", reason)
            if not _may_see_details():
                return {"status": "down"}, 503
            return {"status": "down", "database": reason, "version": __version__}, 503
        if not _may_see_details():
            return {"status": "ok"}
        return {"status": "ok", "database": "ok", "version": __version__, "jobs": _jobs()}


def _may_see_details() -> bool:
    """With READ_API_KEYS set, only a reader learns more than up or down."""
    keys = current_settings().read_api_keys
    return not keys or key_is_valid(keys)


def _locks() -> dict:
    """The job locks, made once per app: a PostgreSQL lock keeps an engine."""
    state = current_app.extensions["gpumetrics"]
    if "locks" not in state:
        state["locks"] = job_locks(state["settings"], state["db"])
    return state["locks"]


def _jobs() -> dict:
    """What the jobs did, read from the database so that every worker can answer."""
    settings, db = current_settings(), current_db()
    files = {}
    with db.reading() as session:
        for tailer in tailers(settings, db):
            checkpoint = load_checkpoint(session, tailer.host, tailer.key)
            files[str(tailer.path)] = {
                "linesRead": checkpoint.lines_read if checkpoint else 0,
                "recordsStored": checkpoint.records_stored if checkpoint else 0,
                "duplicates": checkpoint.duplicates if checkpoint else 0,
                "linesRejected": checkpoint.lines_rejected if checkpoint else 0,
                "bytesBehind": tailer.behind(),
            }
        last_retention = retention.last_run(session)
    return {
        "runners": {name: lock.holder() for name, lock in _locks().items()},
        "files": files,
        "retention": {"retentionHours": settings.metrics_retention_hours, "lastRun": last_retention},
    }
