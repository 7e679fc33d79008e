"""/metrics/series, /metrics/latest, /metrics/export: what a dashboard charts, shows and downloads."""

from __future__ import annotations

from flask import Response, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from .. import times
from ..http.auth import requires
from ..state import get_db, get_settings
from ..store import export, queries
from ..store import latest as newest
from ..store import series as charts
from .schemas import MAX_BUCKETS, ExportQuery, LatestQuery, LatestResult, SeriesQuery, SeriesResult

blp = Blueprint("series", __name__, url_prefix="/metrics", description="Chart queries: buckets, latest values, export.")

HOUR = 3600 * 1_000_000
SERIES_EXAMPLE = {
    "metric": "utilization",
    "field": "gpuPercent",
    "aggregate": "avg",
    "step": 60,
    "start": "2025-12-01T18:00:00Z",
    "end": "2025-12-01T19:00:00Z",
    "series": [
        {
            "host": "trainer-01",
            "gpuIndex": 0,
            "uuid": "GPU-abc-uuid",
            "name": "NVIDIA A100-PCIE-40GB",
            "points": [["2025-12-01T18:00:00Z", 41.7], ["2025-12-01T18:01:00Z", 55.2]],
        }
    ],
}
LATEST_EXAMPLE = {
    "items": [
        {
            "timestamp": "2025-12-01T18:51:30Z",
            "gpuIndex": 0,
            "metric": "utilization",
            "host": "trainer-01",
            "uuid": "GPU-abc-uuid",
            "name": "NVIDIA A100-PCIE-40GB",
            "gpuPercent": 72,
            "memoryPercent": 35,
        }
    ]
}
EXPORTED = {
    "description": "Every record of the filters, oldest first, streamed as an attachment.",
    "content": {
        "application/x-ndjson": {
            "schema": {"type": "string"},
            "example": '{"timestamp":"2025-12-01T18:51:30Z","gpuIndex":0,"metric":"power","watts":165.0}\n',
        },
        "text/csv": {
            "schema": {"type": "string"},
            "example": ",".join(export.CSV_COLUMNS) + "\n2025-12-01T18:51:30Z,,0,,,power,,,,,,,165.0" + "," * 9 + "\n",
        },
    },
    "headers": {"Content-Disposition": {"description": "attachment; filename=...", "schema": {"type": "string"}}},
}


def _window(args: dict) -> tuple[int, int]:
    end = args.get("end")
    end = times.now_micros() if end is None else end
    start = args.get("start")
    return (end - HOUR if start is None else start), end


@blp.route("/series")
class MetricSeries(MethodView):
    @requires("read")
    @blp.arguments(SeriesQuery, location="query")
    @blp.response(200, SeriesResult, example=SERIES_EXAMPLE)
    def get(self, args):
        """One aggregate per time bucket, per GPU, per host or for the whole fleet."""
        start, end = _window(args)
        step = args["step"] * 1_000_000
        if start > end:
            abort(422, errors={"query": {"start": ["start is after end (the default end is now)."]}})
        if (end - start) / step > MAX_BUCKETS:
            message = f"{(end - start) // step} buckets; at most {MAX_BUCKETS}: widen the step or shorten the window."
            abort(422, errors={"query": {"step": [message]}})
        hours = get_settings().metrics_retention_hours
        request = charts.Request(
            metric=args["metric"],
            field=args.get("field"),
            aggregate=args["aggregate"],
            step=step,
            start=start,
            end=end,
            filters=queries.Filters.from_args(args),
            group_by=args["groupBy"],
            records_since=None if hours is None else times.now_micros() - int(hours * HOUR),
        )
        try:
            with get_db().reading() as conn:
                found = charts.series(conn, request)
        except charts.RecordsExpired as since:
            message = (
                f"Percentiles need the records, kept METRICS_RETENTION_HOURS={hours:g}: start at or after {since}."
            )
            abort(
                422, errors={"query": {"aggregate": [message + " avg, min, max, sum, count and last reach further."]}}
            )
        return {
            "metric": request.metric,
            "field": request.field,
            "aggregate": request.aggregate,
            "step": args["step"],
            "start": times.to_iso(start),
            "end": times.to_iso(end),
            "series": found,
        }


@blp.route("/latest")
class LatestValues(MethodView):
    @requires("read")
    @blp.arguments(LatestQuery, location="query")
    @blp.response(200, LatestResult, example=LATEST_EXAMPLE)
    def get(self, args):
        """The newest record of every GPU and kind; for processes, every process at the newest time."""
        with get_db().reading() as conn:
            return {"items": newest.read(conn, queries.Filters.from_args(args))}


@blp.route("/export")
class Export(MethodView):
    @requires("read")
    @blp.arguments(ExportQuery, location="query")
    @blp.doc(responses={"200": EXPORTED})
    def get(self, args):
        """Every record of the filters, streamed as NDJSON or CSV, without a page limit."""
        filters = queries.Filters.from_args(args)
        csv_wanted = args["format"] == "csv"
        lines = (export.csv_text if csv_wanted else export.ndjson)(get_db(), filters)
        stamp = times.to_iso(times.now_micros()).replace(":", "").replace("-", "").split(".")[0]
        suffix = "csv" if csv_wanted else "ndjson"
        return Response(
            stream_with_context(lines),
            mimetype="text/csv" if csv_wanted else "application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="gpumetrics-{stamp}.{suffix}"'},
        )
