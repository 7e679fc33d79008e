"""/stats: per-GPU, per-kind summaries over a time window."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from ..http.auth import requires
from ..state import get_db
from ..store import queries
from .schemas import StatsQuery, StatsResult

blp = Blueprint("stats", __name__, url_prefix="/stats", description="Per-GPU statistics.")


@blp.route("")
class Stats(MethodView):
    @requires("read")
    @blp.arguments(StatsQuery, location="query")
    @blp.response(200, StatsResult)
    def get(self, args):
        """Count, time range and min/max/avg/last of every field, per GPU and kind."""
        with get_db().reading() as session:
            return {"gpus": queries.stats(session, queries.Filters.from_args(args))}
