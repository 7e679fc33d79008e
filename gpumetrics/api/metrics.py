"""/metrics: ingest records, page through them, or aggregate them."""

from __future__ import annotations

import logging
import zlib

from flask import redirect, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from .. import observe, times
from ..http.auth import requires
from ..records import crawler, events
from ..records.jsonparse import loads
from ..records.schemas import RECORD_SCHEMAS
from ..records.validate import Checked, TimeWindow, as_items, describe, validate
from ..state import get_db, get_settings
from ..store import queries
from ..store.ingest import prepare_all, store_all
from ..store.write import Stored
from .schemas import AggregateQuery, AggregateResult, IngestRejected, IngestResult, MetricsPage, MetricsQuery

log = logging.getLogger(__name__)
blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Ingest and read GPU metric records.")

SEED_EXAMPLE = {
    "timestamp": "2025-12-01T18:51:30Z",
    "gpuIndex": 0,
    "metric": "memory",
    "totalMiB": 40960,
    "usedMiB": 1234,
    "freeMiB": 39726,
}
BATCH_EXAMPLE = [
    SEED_EXAMPLE,
    {
        "timestamp": "2025-12-01T18:51:30Z",
        "gpuIndex": 0,
        "metric": "utilization",
        "gpuPercent": 72,
        "memoryPercent": 35,
    },
    {"timestamp": "2025-12-01T18:51:30Z", "gpuIndex": 0, "metric": "temperature", "celsius": 62},
    {"timestamp": "2025-12-01T18:51:30Z", "gpuIndex": 0, "metric": "power", "watts": 165.0},
    {"timestamp": "2025-12-01T18:51:30Z", "gpuIndex": 0, "metric": "clocks", "graphicsMHz": 1410, "memoryMHz": 1215},
    {"timestamp": "2025-12-01T18:51:30Z", "gpuIndex": 0, "metric": "process", "pid": 1234, "usedMiB": 2048},
]


INPUT_SCHEMAS = [*RECORD_SCHEMAS.values(), *crawler.SCHEMAS.values(), *events.SCHEMAS.values()]


def _record_refs() -> list[dict[str, str]]:
    return [{"$ref": f"#/components/schemas/{cls.__name__}"} for cls in INPUT_SCHEMAS]


REQUEST_BODY = {
    "required": True,
    "description": (
        "One record, or an array of records (at most MAX_BATCH), in either format, mixed freely: "
        "the canonical format (`metric` names the kind: MemoryRecord ... ProcessRecord), or the C++ "
        "crawler's own (`metricType` gpu or process: CrawlerGpuRecord, CrawlerProcessRecord), where one "
        "gpu record becomes a memory, utilization, temperature, power and (with clocks) clocks record; or "
        "gpumon_client's events as the crawler forwards them (`type`: init, shutdown, scope_begin, scope_sample, "
        "scope_end, kernel, system_sample; EventKernel ...), timed in nanoseconds of the host's monotonic clock. "
        "Unknown fields are ignored."
    ),
    "content": {
        "application/json": {
            "schema": {"oneOf": [*_record_refs(), {"type": "array", "items": {"oneOf": _record_refs()}}]},
            "examples": {
                "one": {"summary": "One memory record", "value": SEED_EXAMPLE},
                "batch": {"summary": "A batch of every kind", "value": BATCH_EXAMPLE},
                "crawlerGpu": {"summary": "The crawler's gpu record", "value": crawler.GPU_EXAMPLE},
                "crawlerProcess": {"summary": "The crawler's process record", "value": crawler.PROCESS_EXAMPLE},
                "kernel": {"summary": "A gpumon_client kernel event", "value": events.EXAMPLES["kernel"]},
                "systemSample": {"summary": "A gpumon_client GPU sample", "value": events.EXAMPLES["system_sample"]},
                "mixed": {
                    "summary": "Both formats in one batch",
                    "value": [crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE, SEED_EXAMPLE],
                },
            },
        }
    },
}

RESULT_EXAMPLE = {
    "stored": 5,
    "duplicates": 1,
    "rejected": [],
    "warnings": [{"index": 3, "field": "kernelName", "message": "cut to 65536 characters"}],
}
REJECTED_EXAMPLE = {
    "code": 422,
    "status": "Unprocessable Entity",
    "message": "5 of 6 records stored; 1 rejected",
    "errors": {"2": {"celsius": ["Not a valid number."]}},
    "stored": 5,
    "duplicates": 0,
    "rejected": [{"index": 2, "errors": {"celsius": ["Not a valid number."]}}],
    "warnings": [],
}


PAGE_EXAMPLE = {
    "items": [
        {
            "timestamp": "2025-12-01T18:51:30Z",
            "gpuIndex": 0,
            "metric": "utilization",
            "host": "trainer-01",
            "uuid": "GPU-abc-uuid",
            "gpuPercent": 72,
            "memoryPercent": 35,
        }
    ],
    "next": "YXNjOjE3NjQ2MTUwOTAwMDAwMDA6MQ",
}
AGGREGATE_EXAMPLE = {"aggregate": "avg", "metric": "utilization", "field": "gpuPercent", "value": 41.7, "count": 3600}
MOVED = {"Location": {"description": "GET /metrics/aggregate with the same query.", "schema": {"type": "string"}}}


def document_records(spec) -> None:
    """Put each format's record schema in the OpenAPI components, for the request body."""
    for cls in INPUT_SCHEMAS:
        spec.components.schema(cls.__name__, schema=cls)


def _body() -> bytes:
    """The request body, decompressed when it is gzip, never more than MAX_BODY_BYTES of it."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    data = request.get_data(cache=False)
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "x-gzip"):
        abort(415, message=f"Content-Encoding {encoding!r} is not supported: send the body as it is, or gzip.")
    limit = get_settings().max_body_bytes
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        abort(400, message=f"The body is not valid gzip: {error}.")
    if len(body) > limit:
        abort(413, message=f"The body, decompressed, is larger than MAX_BODY_BYTES={limit} bytes.")
    if not inflater.eof:
        abort(400, message="The body is not valid gzip: it ends early.")
    return body


def _parse_body() -> list:
    if not request.is_json:
        abort(415, message="Send records as application/json.")
    body = _body()
    try:
        parsed = loads(body)
    except (ValueError, RecursionError) as error:
        abort(400, message=f"The body is not valid JSON: {error}")
    try:
        items = as_items(parsed)
    except ValueError as error:
        abort(400, message=f"The body must hold records: {error}.")
    limit = get_settings().max_batch
    if len(items) > limit:
        abort(413, message=f"At most {limit} records per request (MAX_BATCH={limit}); this one has {len(items)}.")
    return items


def _rejection(result: dict, checked: Checked, total: int) -> dict:
    """The 422 answer: the ingest result, with the fields of every error answer."""
    rejected = len(checked.rejected)
    log.warning(
        "POST /metrics from %s: %d of %d records rejected; first: %s",
        request.remote_addr,
        rejected,
        total,
        describe(checked.rejected[:1]),
    )
    return {
        "code": 422,
        "status": "Unprocessable Entity",
        "message": f"{total - rejected} of {total} records stored; {rejected} rejected",
        "errors": {str(item["index"]): item["errors"] for item in checked.rejected},
        **result,
    }


@blp.route("")
class Metrics(MethodView):
    @requires("ingest")
    @blp.doc(requestBody=REQUEST_BODY)
    @blp.response(201, IngestResult, description="Every record was stored or was a duplicate.", example=RESULT_EXAMPLE)
    @blp.alt_response(
        422,
        schema=IngestRejected,
        description="Some records were invalid and are listed by position; the valid ones were stored.",
        example=REJECTED_EXAMPLE,
    )
    @blp.alt_response(400, description="The body is not JSON, or not an object or array.")
    @blp.alt_response(413, description="Body larger than MAX_BODY_BYTES or more than MAX_BATCH records.")
    @blp.alt_response(415, description="The body is not application/json.")
    def post(self):
        """Store one record or a batch, in one transaction, ignoring duplicates."""
        items = _parse_body()
        checked = validate(items, TimeWindow.from_settings(get_settings()))
        stored = Stored()
        if checked.records or checked.events:
            batch, events = prepare_all(checked.records, checked.events, checked.origins)
            with get_db().writing() as conn:
                stored = store_all(conn, batch, events, times.now_micros() * 1000)
        if stored.refused:
            refusals = [{"index": i, "errors": {"timestamp": [why]}} for i, why in stored.refused.items()]
            checked.rejected = sorted(checked.rejected + refusals, key=lambda item: item["index"])
        observe.ingested("http", stored, checked.rejected)
        result = {
            "stored": stored.stored,
            "duplicates": stored.duplicates,
            "rejected": checked.rejected,
            "warnings": checked.warnings,
        }
        if checked.rejected:
            return _rejection(result, checked, len(items)), 422
        return result, 201

    @requires("read")
    @blp.arguments(MetricsQuery, location="query")
    @blp.response(200, MetricsPage, description="A page of records.", example=PAGE_EXAMPLE)
    @blp.alt_response(308, description="With `aggregate`: the same query at GET /metrics/aggregate.", headers=MOVED)
    def get(self, args):
        """Page through records, oldest first."""
        if args.get("aggregate"):
            return redirect(url_for("metrics.Aggregate", **request.args.to_dict(flat=False)), 308)
        try:
            with get_db().reading() as conn:
                items, next_cursor = queries.page(
                    conn, queries.Filters.from_args(args), args["limit"], args["order"], args.get("cursor")
                )
        except queries.BadCursor as error:
            abort(422, errors={"query": {"cursor": [str(error)]}})
        return {"items": items, "next": next_cursor}


@blp.route("/aggregate")
class Aggregate(MethodView):
    @requires("read")
    @blp.arguments(AggregateQuery, location="query")
    @blp.response(200, AggregateResult, example=AGGREGATE_EXAMPLE)
    def get(self, args):
        """Compute one aggregate (avg, min, max, sum, count) over the filtered records."""
        with get_db().reading() as conn:
            value, count = queries.aggregate(
                conn, queries.Filters.from_args(args), args["aggregate"], args.get("field")
            )
        return {
            "aggregate": args["aggregate"],
            "metric": args.get("metric"),
            "field": args.get("field"),
            "value": value,
            "count": count,
        }
