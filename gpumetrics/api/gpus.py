"""/gpus: every GPU that has records."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from ..http.auth import requires
from ..state import get_db
from ..store import queries
from .schemas import GpuList, GpusQuery

EXAMPLE = {
    "gpus": [
        {
            "gpuIndex": 0,
            "host": "trainer-01",
            "uuid": "GPU-abc-uuid",
            "name": "NVIDIA A100-PCIE-40GB",
            "firstSeen": "2025-12-01T18:00:00Z",
            "lastSeen": "2025-12-01T18:51:30Z",
        }
    ]
}
blp = Blueprint("gpus", __name__, url_prefix="/gpus", description="The GPUs the service has records of.")


@blp.route("")
class Gpus(MethodView):
    @requires("read")
    @blp.arguments(GpusQuery, location="query")
    @blp.response(200, GpuList, example=EXAMPLE)
    def get(self, args):
        """List every GPU with records (of a host, an index, a UUID), and the time range they cover."""
        with get_db().reading() as conn:
            return {"gpus": queries.gpu_list(conn, queries.Filters.from_args(args))}
