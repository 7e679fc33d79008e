"""Marshmallow schemas of the API: query arguments and answers (records in are in records/)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from ..kinds import FIELD_KINDS, GPU_INDEX_MAX, INT64_MAX, KINDS, MEASURED_FIELDS, NAME_MAX, TEXT_MAX
from ..records.schemas import Timestamp, text_rules

AGGREGATES = ("avg", "min", "max", "sum", "count")


class Shaped(fields.Nested):
    """A value the store already built in the nested schema's shape: documented as that
    schema, dumped as it is (marshmallow would cost more than the query for a page)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class Rejection(Schema):
    index = fields.Integer(
        required=True, metadata={"description": "Position of the record in the request (0 for a single record)."}
    )
    errors = fields.Dict(
        required=True,
        metadata={"description": "Field name to its error messages."},
    )


class Warning(Schema):
    index = fields.Integer(required=True, metadata={"description": "Position of the record in the request."})
    field = fields.String(required=True, metadata={"description": "The field the warning is about."})
    message = fields.String(required=True, metadata={"description": "What was done, e.g. cut to 65536 characters."})


class IngestResult(Schema):
    """The answer of POST /metrics; on 422 it also carries the fields of every error answer."""

    stored = fields.Integer(required=True, metadata={"description": "Records stored by this request."})
    duplicates = fields.Integer(
        required=True,
        metadata={"description": "Valid records already stored earlier (same host, GPU, metric, timestamp, pid)."},
    )
    rejected = fields.List(fields.Nested(Rejection), required=True, metadata={"description": "Invalid records."})
    warnings = fields.List(
        fields.Nested(Warning),
        required=True,
        metadata={"description": "Records stored with a change, e.g. free text cut to its limit."},
    )
    code = fields.Integer(metadata={"description": "422, when some records were rejected."})
    status = fields.String(metadata={"description": "Unprocessable Entity, when some records were rejected."})
    message = fields.String(metadata={"description": "What was stored and rejected, when some records were rejected."})
    errors = fields.Dict(metadata={"description": "Field errors by the record's index, when some were rejected."})


class IngestRejected(IngestResult):
    """The 422 of POST /metrics: the ingest result, in the shape of every error answer too."""

    class Meta:
        fields = ("stored", "duplicates", "rejected", "warnings", "code", "status", "message", "errors")

    code = fields.Integer(required=True, metadata={"description": "422."})
    status = fields.String(required=True)
    message = fields.String(required=True)
    errors = fields.Dict(required=True, metadata={"description": "Field errors by the record's index."})


def _record_out_fields() -> dict[str, fields.Field]:
    out: dict[str, fields.Field] = {
        "timestamp": fields.String(required=True, metadata={"description": "ISO 8601 UTC, ending in Z."}),
        "gpuIndex": fields.Integer(allow_none=True, metadata={"description": "NVML index of the GPU."}),
        "metric": fields.String(required=True, validate=validate.OneOf(list(KINDS))),
        "host": fields.String(metadata={"description": "Host, when the record named one."}),
        "uuid": fields.String(
            allow_none=True,
            metadata={
                "description": "GPU UUID, when known; null (with gpuIndex null) for a record of its host without a GPU."
            },
        ),
        "name": fields.String(metadata={"description": "GPU product name, when known."}),
    }
    for kind in KINDS.values():
        for field in kind.fields:
            if field.name not in out:
                unit = f" ({field.unit})" if field.unit else ""
                meta = {
                    "description": f"{field.description}{unit} Present on {', '.join(FIELD_KINDS[field.name])} records."
                }
                cls = {"string": fields.String, "integer": fields.Integer, "number": fields.Float}[field.type]
                out[field.name] = cls(metadata=meta)
    return out


StoredRecord = Schema.from_dict(_record_out_fields(), name="StoredRecord")


class MetricsPage(Schema):
    items = fields.List(Shaped(StoredRecord), required=True)
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last page."},
    )


class AggregateResult(Schema):
    aggregate = fields.String(required=True, validate=validate.OneOf(AGGREGATES))
    metric = fields.String(required=True, allow_none=True)
    field = fields.String(required=True, allow_none=True)
    value = fields.Float(required=True, allow_none=True, metadata={"description": "Null when no record matched."})
    count = fields.Integer(required=True, metadata={"description": "Records the value was computed over."})


class Gpu(Schema):
    gpuIndex = fields.Integer(required=True, allow_none=True)
    host = fields.String(required=True, allow_none=True, metadata={"description": "Null for the local host."})
    uuid = fields.String(required=True, allow_none=True)
    name = fields.String(required=True, allow_none=True)
    firstSeen = fields.String(required=True, metadata={"description": "Oldest record, ISO 8601 UTC."})
    lastSeen = fields.String(required=True, metadata={"description": "Newest record, ISO 8601 UTC."})


class GpuList(Schema):
    gpus = fields.List(fields.Nested(Gpu), required=True)


class FieldStats(Schema):
    min = fields.Float(allow_none=True)
    max = fields.Float(allow_none=True)
    avg = fields.Float(allow_none=True)
    last = fields.Raw(allow_none=True, metadata={"description": "Value of the newest record."})


def _kind_stats(kind) -> type[Schema]:
    per_field = Schema.from_dict(
        {f.name: fields.Nested(FieldStats) for f in kind.fields if f.measured},
        name=f"{kind.name.capitalize()}FieldStats",
    )
    return Schema.from_dict(
        {
            "count": fields.Integer(required=True),
            "first": fields.String(required=True, metadata={"description": "Oldest record in the window."}),
            "last": fields.String(required=True, metadata={"description": "Newest record in the window."}),
            "fields": fields.Nested(per_field, required=True),
        },
        name=f"{kind.name.capitalize()}Stats",
    )


GpuMetricStats = Schema.from_dict(
    {name: fields.Nested(_kind_stats(kind)) for name, kind in KINDS.items()}, name="GpuMetricStats"
)


class GpuStats(Gpu):
    class Meta:
        exclude = ("firstSeen", "lastSeen")

    metrics = fields.Nested(GpuMetricStats, required=True)


class StatsResult(Schema):
    gpus = fields.List(fields.Nested(GpuStats), required=True)


class Health(Schema):
    status = fields.String(required=True, metadata={"description": "ok, or down."})
    database = fields.String(
        metadata={"description": "ok, or the reason it does not answer (only for readers when READ_API_KEYS is set)."}
    )
    version = fields.String()
    jobs = fields.Dict(metadata={"description": "File tailers and retention, when this process runs the jobs."})


# The crawler's and its web front end's names of the filters, accepted on every read.
ALIASES = {"hostname": "host", "gpuId": "uuid"}


class Query(Schema):
    """Query arguments, taken as given: an unknown name, or a one-value parameter given
    twice, is a 422 naming it, never silently ignored."""

    @pre_load
    def _as_given(self, data, **kwargs):
        given = getattr(data, "data", data)  # webargs' proxy of the request's MultiDict
        out: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name in dict.fromkeys(given):
            target = ALIASES.get(name, name) if ALIASES.get(name) in self.fields else name
            values = given.getlist(name) if hasattr(given, "getlist") else [given[name]]
            field = self.fields.get(target)
            if field is None or field.dump_only:
                errors[name] = [f"Unknown parameter; accepted: {self._accepted()}."]
            elif target in out:
                errors[name] = [f"Names the same parameter as {target}: give one of them."]
            elif isinstance(field, fields.List):
                out[target] = values
            elif len(values) > 1:
                errors[name] = [f"Given {len(values)} times; takes one value."]
            else:
                out[target] = values[0]
        if errors:
            raise ValidationError(errors)
        return out

    def _accepted(self) -> str:
        names = sorted(self.fields)
        aliases = [f"{alias} (for {name})" for alias, name in ALIASES.items() if name in self.fields]
        return ", ".join(names + aliases)


class GpuFilters(Query):
    """Which GPUs: by index, host, UUID."""

    gpuIndex = fields.Integer(
        validate=validate.Range(min=0, max=GPU_INDEX_MAX),
        metadata={"description": "Only this GPU index.", "example": 0},
    )
    host = fields.String(
        validate=text_rules(NAME_MAX),
        metadata={"description": "Only this host (also accepted as `hostname`).", "example": "trainer-01"},
    )
    uuid = fields.String(
        validate=text_rules(NAME_MAX),
        metadata={"description": "Only the GPU with this UUID (also accepted as `gpuId`).", "example": "GPU-abc-uuid"},
    )


class Window(GpuFilters):
    """Filters shared by the read endpoints: GPUs and a time window."""

    start = Timestamp(
        metadata={
            "description": "Records at or after this time (ISO 8601; naive means UTC).",
            "example": "2025-12-01T18:00:00Z",
        }
    )
    end = Timestamp(
        metadata={
            "description": "Records at or before this time (ISO 8601; naive means UTC).",
            "example": "2025-12-01T19:00:00Z",
        }
    )

    @validates_schema
    def _start_before_end(self, data, **kwargs):
        if data.get("start") is not None and data.get("end") is not None and data["start"] > data["end"]:
            raise ValidationError("start is after end.", "start")


class MetricsQuery(Window):
    metric = fields.String(
        validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind.", "example": "utilization"}
    )
    limit = fields.Integer(
        load_default=1000,
        validate=validate.Range(min=1, max=10000),
        metadata={"description": "Records per page, 1 to 10000.", "example": 100},
    )
    order = fields.String(
        load_default="asc",
        validate=validate.OneOf(["asc", "desc"]),
        metadata={"description": "By timestamp: asc (oldest first) or desc.", "example": "desc"},
    )
    cursor = fields.String(
        validate=text_rules(200),
        metadata={"description": "The `next` of the previous page.", "example": "YXNjOjE3NjQ2MTUwOTAwMDAwMDA6MQ"},
    )
    aggregate = fields.String(
        validate=validate.OneOf(AGGREGATES),
        metadata={
            "description": "Moved to GET /metrics/aggregate: a request with it is redirected there (308).",
            "example": "avg",
        },
    )
    field = fields.String(
        validate=validate.OneOf(MEASURED_FIELDS),
        metadata={
            "description": "Only with `aggregate`, which moved to GET /metrics/aggregate.",
            "example": "gpuPercent",
        },
    )

    @validates_schema
    def _aggregate_needs(self, data, **kwargs):
        check_aggregate(data)
        if data.get("aggregate") is not None and data.get("cursor") is not None:
            raise ValidationError("cursor does not apply to aggregates.", "cursor")


class AggregateQuery(Window):
    metric = fields.String(
        validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind.", "example": "utilization"}
    )
    aggregate = fields.String(
        required=True,
        validate=validate.OneOf(AGGREGATES),
        metadata={"description": "The aggregate to compute over the filtered records.", "example": "avg"},
    )
    field = fields.String(
        validate=validate.OneOf(MEASURED_FIELDS),
        metadata={"description": "Field to aggregate; required except for count.", "example": "gpuPercent"},
    )

    @validates_schema
    def _aggregate_needs(self, data, **kwargs):
        check_aggregate(data)


def check_aggregate(data: dict) -> None:
    """An aggregate names a field of the kind, unless it counts records."""
    field, metric, aggregate = data.get("field"), data.get("metric"), data.get("aggregate")
    if field is not None and metric is not None and KINDS[metric].field(field) is None:
        valid = ", ".join(f.name for f in KINDS[metric].fields if f.measured)
        raise ValidationError(f"{field} is not a field of {metric}; valid: {valid}.", "field")
    if aggregate is None:
        if field is not None:
            raise ValidationError("field is only used with aggregate.", "field")
        return
    if field is None and aggregate != "count":
        raise ValidationError(f"{aggregate} needs a field; valid: {', '.join(MEASURED_FIELDS)}.", "field")
    if field is not None and metric is None and len(FIELD_KINDS[field]) > 1:
        raise ValidationError(f"{field} belongs to {', '.join(FIELD_KINDS[field])}: name one.", "metric")


class StatsQuery(Window):
    metric = fields.String(
        validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind.", "example": "utilization"}
    )


class GpusQuery(GpuFilters):
    pass


# ---- chart queries ---------------------------------------------------------------------

SERIES_AGGREGATES = ("avg", "min", "max", "sum", "count", "last", "p50", "p90", "p95", "p99")
MAX_BUCKETS = 11_000  # as Prometheus: (end - start) / step
_DURATION = re.compile(r"^(\d{1,9})([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(fields.Field):
    """Whole seconds, or a number with a unit: 30s, 1m, 5m, 1h, 1d."""

    default_error_messages = {"invalid": "Not a duration: give whole seconds, or a number with s, m, h or d."}

    def _deserialize(self, value, attr, data, **kwargs):
        found = _DURATION.match(value.strip()) if isinstance(value, str) else None
        if found is None:
            raise self.make_error("invalid")
        return int(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def _several(field: fields.Field, what: str, example: Any) -> fields.List:
    return fields.List(field, metadata={"description": f"{what} Repeat it to name several.", "example": [example]})


class ChartFilters(Query):
    """Which GPUs, each filter repeatable: one call covers several GPUs."""

    gpuIndex = _several(fields.Integer(validate=validate.Range(min=0, max=GPU_INDEX_MAX)), "Only this GPU index.", 0)
    host = _several(
        fields.String(validate=text_rules(NAME_MAX)), "Only this host (also accepted as `hostname`).", "trainer-01"
    )
    uuid = _several(
        fields.String(validate=text_rules(NAME_MAX)), "Only this GPU UUID (also accepted as `gpuId`).", "GPU-abc-uuid"
    )


class SeriesQuery(ChartFilters):
    metric = fields.String(
        required=True,
        validate=validate.OneOf(list(KINDS)),
        metadata={"description": "The kind.", "example": "utilization"},
    )
    field = fields.String(
        validate=validate.OneOf(MEASURED_FIELDS),
        metadata={
            "description": "The field of the kind; required except with aggregate=count.",
            "example": "gpuPercent",
        },
    )
    aggregate = fields.String(
        load_default="avg",
        validate=validate.OneOf(SERIES_AGGREGATES),
        metadata={
            "description": "Per bucket: avg (default), min, max, sum, count, last (the newest record's value), or the "
            "exact percentile p50, p90, p95, p99 (numpy's linear interpolation; only while the records are kept).",
            "example": "avg",
        },
    )
    step = Duration(
        required=True,
        metadata={
            "description": "Bucket width: whole seconds, or 30s, 1m, 5m, 1h, 1d. Buckets start at multiples of the "
            "step since the epoch (UTC). At most 11000 buckets in the window.",
            "example": "1m",
        },
    )
    start = Timestamp(
        metadata={
            "description": "Records at or after this time; default an hour before `end`.",
            "example": "2025-12-01T18:00:00Z",
        }
    )
    end = Timestamp(
        metadata={"description": "Records at or before this time; default now.", "example": "2025-12-01T19:00:00Z"}
    )
    groupBy = fields.String(
        load_default="gpu",
        validate=validate.OneOf(["gpu", "host", "none"]),
        metadata={
            "description": "A series per gpu (default), per host, or one for everything (none).",
            "example": "gpu",
        },
    )

    @validates_schema
    def _consistent(self, data, **kwargs):
        metric, field, aggregate = data.get("metric"), data.get("field"), data.get("aggregate", "avg")
        if metric is None:
            return
        if field is None and aggregate != "count":
            valid = ", ".join(f.name for f in KINDS[metric].fields if f.measured)
            raise ValidationError(f"{aggregate} needs a field of {metric}: {valid}.", "field")
        if field is not None and KINDS[metric].field(field) is None:
            valid = ", ".join(f.name for f in KINDS[metric].fields if f.measured)
            raise ValidationError(f"{field} is not a field of {metric}; valid: {valid}.", "field")
        if data.get("step") is not None and data["step"] < 1:
            raise ValidationError("Must be at least 1 second.", "step")


class Series(Schema):
    host = fields.String(allow_none=True, metadata={"description": "With groupBy gpu or host; null: the local host."})
    gpuIndex = fields.Integer(allow_none=True, metadata={"description": "With groupBy gpu."})
    uuid = fields.String(allow_none=True, metadata={"description": "With groupBy gpu."})
    name = fields.String(allow_none=True, metadata={"description": "With groupBy gpu."})
    points = fields.List(
        fields.Tuple((fields.String(), fields.Float())),
        required=True,
        metadata={"description": "[bucket start (ISO 8601 UTC), value], ascending; empty buckets are left out."},
    )


class SeriesResult(Schema):
    metric = fields.String(required=True)
    field = fields.String(required=True, allow_none=True)
    aggregate = fields.String(required=True)
    step = fields.Integer(required=True, metadata={"description": "Seconds."})
    start = fields.String(required=True)
    end = fields.String(required=True)
    series = fields.List(fields.Nested(Series), required=True)


class LatestQuery(ChartFilters):
    metric = fields.String(
        validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind.", "example": "utilization"}
    )


class LatestResult(Schema):
    items = fields.List(Shaped(StoredRecord), required=True)


class ExportQuery(Window):
    metric = fields.String(
        validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind.", "example": "utilization"}
    )
    format = fields.String(
        load_default="ndjson",
        validate=validate.OneOf(["ndjson", "csv"]),
        metadata={"description": "ndjson (a record a line, as GET /metrics shows it) or csv.", "example": "csv"},
    )


# ---- gpumon_client's events ------------------------------------------------------------


class SpanFilterArgs(Query):
    host = fields.String(
        validate=text_rules(NAME_MAX),
        metadata={"description": "Only this host (also accepted as `hostname`).", "example": "trainer-01"},
    )
    app = fields.String(validate=text_rules(TEXT_MAX), metadata={"description": "Only this app.", "example": "train"})
    pid = fields.Integer(
        validate=validate.Range(min=0, max=INT64_MAX), metadata={"description": "Only this process.", "example": 4242}
    )
    name = fields.String(
        validate=text_rules(TEXT_MAX),
        metadata={"description": "Only this kernel or scope name.", "example": "ampere_sgemm_128x64_nn"},
    )
    tag = fields.String(validate=text_rules(TEXT_MAX), metadata={"description": "Only this tag.", "example": "epoch1"})
    start = Timestamp(
        metadata={"description": "Spans that end at or after this time (UTC).", "example": "2025-12-01T18:00:00Z"}
    )
    end = Timestamp(
        metadata={"description": "Spans that start at or before this time (UTC).", "example": "2025-12-01T19:00:00Z"}
    )
    cudaError = fields.String(
        validate=text_rules(NAME_MAX),
        metadata={
            "description": "Only kernels with this cuda_error; `failed`: anything but cudaSuccess.",
            "example": "failed",
        },
    )

    @validates_schema
    def _start_before_end(self, data, **kwargs):
        if data.get("start") is not None and data.get("end") is not None and data["start"] > data["end"]:
            raise ValidationError("start is after end.", "start")


class SpansQuery(SpanFilterArgs):
    type = fields.String(
        validate=validate.OneOf(["scope", "kernel"]),
        metadata={"description": "Only scopes, or only kernels.", "example": "kernel"},
    )
    limit = fields.Integer(
        load_default=1000,
        validate=validate.Range(min=1, max=10000),
        metadata={"description": "Spans per page, 1 to 10000.", "example": 100},
    )
    cursor = fields.String(
        validate=text_rules(200),
        metadata={"description": "The `next` of the previous page.", "example": "c3BhbnM6MTc2NDYxNTA5MDAwMDAwMDAwMDox"},
    )


class SummaryQuery(SpanFilterArgs):
    type = fields.String(
        load_default="kernel",
        validate=validate.OneOf(["scope", "kernel"]),
        metadata={"description": "Summarize kernels (default) or scopes.", "example": "kernel"},
    )


class ProcessesQuery(Query):
    host = fields.String(
        validate=text_rules(NAME_MAX),
        metadata={"description": "Only this host (also accepted as `hostname`).", "example": "trainer-01"},
    )
    app = fields.String(validate=text_rules(TEXT_MAX), metadata={"description": "Only this app.", "example": "train"})


class Span(Schema):
    type = fields.String(required=True, metadata={"description": "scope or kernel."})
    name = fields.String(required=True)
    tag = fields.String(required=True, allow_none=True)
    host = fields.String(required=True, allow_none=True, metadata={"description": "Null for the local host."})
    pid = fields.Integer(required=True)
    app = fields.String(required=True)
    start = fields.String(required=True, metadata={"description": "UTC, mapped from the host's monotonic clock."})
    end = fields.String(required=True, allow_none=True, metadata={"description": "Null while a scope is open."})
    durationNs = fields.Integer(required=True, allow_none=True)
    startNs = fields.Integer(required=True, metadata={"description": "The raw monotonic nanoseconds."})
    endNs = fields.Integer(required=True, allow_none=True)
    state = fields.String(metadata={"description": "Scopes: open, closed, or abandoned (its process shut down)."})
    memoryBegin = fields.List(
        fields.Dict(),
        allow_none=True,
        metadata={"description": "Scopes: device memory at the begin, [{device, used_mib, free_mib, total_mib}]."},
    )
    memoryEnd = fields.List(
        fields.Dict(), allow_none=True, metadata={"description": "Scopes: device memory at the end."}
    )
    grid = fields.List(fields.Integer(), metadata={"description": "Kernels: the launch's grid."})
    block = fields.List(fields.Integer(), metadata={"description": "Kernels: the launch's block."})
    sharedMemBytes = fields.Integer(allow_none=True, metadata={"description": "Kernels: dynamic shared memory."})
    cudaError = fields.String(allow_none=True, metadata={"description": "Kernels: the launch's CUDA error."})


class SpanPage(Schema):
    items = fields.List(Shaped(Span), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "Pass as `cursor`; null at the end."})


class NameSummary(Schema):
    name = fields.String(required=True)
    timePercent = fields.Float(required=True, metadata={"description": "Share of the total time of all names (%)."})
    totalNs = fields.Integer(required=True)
    instances = fields.Integer(required=True)
    avgNs = fields.Float(required=True)
    medianNs = fields.Float(required=True)
    minNs = fields.Integer(required=True)
    maxNs = fields.Integer(required=True)
    stddevNs = fields.Float(required=True, metadata={"description": "Population standard deviation (numpy.std)."})
    failed = fields.Integer(required=True, metadata={"description": "Launches whose cuda_error is not cudaSuccess."})


class SpanSummary(Schema):
    items = fields.List(Shaped(NameSummary), required=True)


class Process(Schema):
    host = fields.String(required=True, allow_none=True)
    pid = fields.Integer(required=True)
    app = fields.String(required=True)
    firstSeen = fields.String(required=True)
    lastSeen = fields.String(required=True)
    shutDown = fields.Boolean(required=True)
    spans = fields.Integer(required=True, metadata={"description": "Its scopes and kernels."})


class ProcessList(Schema):
    processes = fields.List(Shaped(Process), required=True)
