"""/spans, /spans/summary, /processes: what ran on which GPU host, when, and for how long."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from ..http.auth import requires
from ..state import get_db
from ..store import spans
from .schemas import ProcessesQuery, ProcessList, SpanPage, SpansQuery, SpanSummary, SummaryQuery

blp = Blueprint("spans", __name__, description="gpumon_client's scopes, kernels and processes.")

SPANS_EXAMPLE = {
    "items": [
        {
            "type": "kernel",
            "name": "ampere_sgemm_128x64_nn",
            "tag": "epoch1",
            "host": "trainer-01",
            "pid": 4242,
            "app": "train",
            "start": "2025-12-01T18:51:30.000100Z",
            "end": "2025-12-01T18:51:30.000350Z",
            "durationNs": 250000,
            "startNs": 1000000000,
            "endNs": 1000250000,
            "grid": [128, 1, 1],
            "block": [256, 1, 1],
            "sharedMemBytes": 0,
            "cudaError": "cudaSuccess",
        }
    ],
    "next": None,
}
SUMMARY_EXAMPLE = {
    "items": [
        {
            "name": "ampere_sgemm_128x64_nn",
            "timePercent": 61.5,
            "totalNs": 123000000,
            "instances": 492,
            "avgNs": 250000.0,
            "medianNs": 249000.0,
            "minNs": 240000,
            "maxNs": 301000,
            "stddevNs": 8123.4,
            "failed": 0,
        }
    ]
}
PROCESSES_EXAMPLE = {
    "processes": [
        {
            "host": "trainer-01",
            "pid": 4242,
            "app": "train",
            "firstSeen": "2025-12-01T18:50:00Z",
            "lastSeen": "2025-12-01T18:59:59Z",
            "shutDown": True,
            "spans": 1820,
        }
    ]
}


@blp.route("/spans")
class Spans(MethodView):
    @requires("read")
    @blp.arguments(SpansQuery, location="query")
    @blp.response(200, SpanPage, example=SPANS_EXAMPLE)
    def get(self, args):
        """Scopes and kernels that overlap the window, by start time, a page at a time."""
        try:
            with get_db().reading() as conn:
                items, cursor = spans.page(conn, spans.SpanFilters.from_args(args), args["limit"], args.get("cursor"))
        except spans.BadCursor as error:
            abort(422, errors={"query": {"cursor": [str(error)]}})
        return {"items": items, "next": cursor}


@blp.route("/spans/summary")
class Summary(MethodView):
    @requires("read")
    @blp.arguments(SummaryQuery, location="query")
    @blp.response(200, SpanSummary, example=SUMMARY_EXAMPLE)
    def get(self, args):
        """Per kernel (or scope) name, like Nsight Systems' cuda_gpu_kern_sum: time share, count, statistics."""
        with get_db().reading() as conn:
            return {"items": spans.summary(conn, spans.SpanFilters.from_args(args))}


@blp.route("/processes")
class Processes(MethodView):
    @requires("read")
    @blp.arguments(ProcessesQuery, location="query")
    @blp.response(200, ProcessList, example=PROCESSES_EXAMPLE)
    def get(self, args):
        """Every process that sent events: app, first and last event, shutdown, spans."""
        with get_db().reading() as conn:
            return {"processes": spans.process_list(conn, args.get("host"), args.get("app"))}
