"""/metrics: ingest records, page through them, or aggregate them."""

from __future__ import annotations

import json

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from .. import crawler, current_db, current_settings, ingest, store
from ..schemas import RECORD_SCHEMAS, AggregateResult, IngestRejected, IngestResult, MetricsPage, MetricsQuery

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


INPUT_SCHEMAS = [*RECORD_SCHEMAS.values(), *crawler.SCHEMAS.values()]


def _record_refs() -> list[dict[str, str]]:
    return [{"$ref": f"#/components/schemas/{cls.__name__}"} for cls in INPUT_SCHEMAS]


REQUEST_BODY = {
    "required": True,
    "description": (
        "One record, or an array of records (at most MAX_BATCH), in either format, mixed freely: "
        "the canonical format (`metric` names the kind: MemoryRecord ... ProcessRecord), or the C++ "
        "crawler's own (`metricType` gpu or process: CrawlerGpuRecord, CrawlerProcessRecord), where one "
        "gpu record becomes a memory, utilization, temperature, power and (with clocks) clocks record. "
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
                "mixed": {
                    "summary": "Both formats in one batch",
                    "value": [crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE, SEED_EXAMPLE],
                },
            },
        }
    },
}

PAGE_OR_AGGREGATE = {
    "description": "A page of records; with `aggregate`, one AggregateResult.",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/MetricsPage"},
                    {"$ref": "#/components/schemas/AggregateResult"},
                ]
            }
        }
    },
}

RESULT_EXAMPLE = {"stored": 5, "duplicates": 1, "rejected": []}
REJECTED_EXAMPLE = {
    "stored": 5,
    "duplicates": 0,
    "rejected": [{"index": 2, "errors": {"celsius": ["Not a valid number."]}}],
}


def document_records(spec) -> None:
    """Put each kind's record schema in the OpenAPI components, for the request body."""
    for cls in INPUT_SCHEMAS:
        spec.components.schema(cls.__name__, schema=cls)
    spec.components.schema("AggregateResult", schema=AggregateResult)


def json_response(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")


def _parse_body() -> list:
    if not request.is_json:
        abort(415, message="Send records as application/json.")
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError) as error:
        abort(400, message=f"The body is not valid JSON: {error}")
    try:
        items = ingest.as_items(body)
    except ValueError as error:
        abort(400, message=f"The body must hold records: {error}.")
    limit = current_settings().max_batch
    if len(items) > limit:
        abort(413, message=f"At most {limit} records per request (MAX_BATCH); this one has {len(items)}.")
    return items


@blp.route("")
class Metrics(MethodView):
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
        checked = ingest.validate(_parse_body())
        stored = duplicates = 0
        if checked.records:
            prepared = store.prepare(checked.records)
            with current_db().writing() as session:
                stored, duplicates = store.insert(session, prepared)
        result = {"stored": stored, "duplicates": duplicates, "rejected": checked.rejected}
        if not checked.rejected:
            return result, 201
        rejected = len(checked.rejected)
        return json_response(  # not through the 201 schema, which would drop the error fields
            {
                "code": 422,
                "status": "Unprocessable Entity",
                "message": f"{rejected} record{'s' * (rejected != 1)} rejected; the valid ones were stored.",
                "errors": {str(item["index"]): item["errors"] for item in checked.rejected},
                **result,
            },
            422,
        )

    @blp.arguments(MetricsQuery, location="query")
    @blp.response(200, MetricsPage, description="A page of records; with `aggregate`, one AggregateResult.")
    @blp.doc(responses={"200": PAGE_OR_AGGREGATE})
    def get(self, args):
        """Page through records, oldest first, or compute one aggregate over them."""
        filters = store.Filters.from_args(args)
        with current_db().reading() as session:
            if args.get("aggregate"):
                value, count = store.aggregate(session, filters, args["aggregate"], args.get("field"))
                return json_response(
                    {
                        "aggregate": args["aggregate"],
                        "metric": args.get("metric"),
                        "field": args.get("field"),
                        "value": value,
                        "count": count,
                    }
                )
            try:
                items, next_cursor = store.page(session, filters, args["limit"], args["order"], args.get("cursor"))
            except store.BadCursor as error:
                abort(422, errors={"query": {"cursor": [str(error)]}})
        return json_response({"items": items, "next": next_cursor})
