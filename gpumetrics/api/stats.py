"""/stats: per-GPU, per-kind summaries over a time window."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from ..http.auth import requires
from ..state import get_db
from ..store import queries
from .schemas import StatsQuery, StatsResult

EXAMPLE = {
    "gpus": [
        {
            "gpuIndex": 0,
            "host": "trainer-01",
            "uuid": "GPU-abc-uuid",
            "name": "NVIDIA A100-PCIE-40GB",
            "metrics": {
                "utilization": {
                    "count": 3600,
                    "first": "2025-12-01T18:00:00Z",
                    "last": "2025-12-01T18:59:59Z",
                    "fields": {
                        "gpuPercent": {"min": 0, "max": 100, "avg": 41.7, "last": 72},
                        "memoryPercent": {"min": 0, "max": 80, "avg": 20.5, "last": 35},
                    },
                }
            },
        }
    ]
}
blp = Blueprint("stats", __name__, url_prefix="/stats", description="Per-GPU statistics.")


@blp.route("")
class Stats(MethodView):
    @requires("read")
    @blp.arguments(StatsQuery, location="query")
    @blp.response(200, StatsResult, example=EXAMPLE)
    def get(self, args):
        """Count, time range and min/max/avg/last of every field, per GPU and kind."""
        with get_db().reading() as conn:
            return {"gpus": queries.stats(conn, queries.Filters.from_args(args))}
