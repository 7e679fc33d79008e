"""/stats: per-GPU, per-kind summaries over a time window."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from .. import current_db, store
from ..schemas import StatsQuery, StatsResult

blp = Blueprint("stats", __name__, url_prefix="/stats", description="Per-GPU statistics.")


@blp.route("")
class Stats(MethodView):
    @blp.arguments(StatsQuery, location="query")
    @blp.response(200, StatsResult)
    def get(self, args):
        """Count, time range and min/max/avg/last of every field, per GPU and kind."""
        with current_db().reading() as session:
            return {"gpus": store.stats(session, store.Filters.from_args(args))}
