"""/health: is the service up, and does its database answer."""

from __future__ import annotations

import logging

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__, current_db
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
            return {"status": "down", "database": reason, "version": __version__}, 503
        return {"status": "ok", "database": "ok", "version": __version__}
