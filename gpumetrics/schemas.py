"""Marshmallow schemas: records (built from the kind registry), query args, responses.

Record fields are strict: a JSON string, boolean, NaN or Infinity where a number
belongs is an error, never coerced, because a crawler bug should be seen, not stored.
"""

from __future__ import annotations

import math

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from . import times
from .kinds import FIELD_KINDS, KINDS, MEASURED_FIELDS, Field

INT64_MAX = 2**63 - 1
AGGREGATES = ("avg", "min", "max", "sum", "count")


class StrictNumber(fields.Float):
    """A JSON number only; finite; stored as a float."""

    default_error_messages = {
        "invalid": "Not a valid number.",
        "special": "NaN and Infinity are not allowed.",
        "too_large": "Number too large.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError:
            raise self.make_error("too_large") from None
        if not math.isfinite(number):
            raise self.make_error("special")
        return number


class StrictInteger(fields.Integer):
    """A JSON integer only (no 3.0, no "3"), within a signed 64-bit range."""

    default_error_messages = {"invalid": "Not a valid integer.", "too_large": "Number too large."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if not -INT64_MAX <= value <= INT64_MAX:
            raise self.make_error("too_large")
        return value


class Timestamp(fields.DateTime):
    """ISO 8601 text loaded as UTC epoch microseconds; naive text means UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return times.parse_iso(value)
        except ValueError:
            raise self.make_error("invalid", input=value, obj_type="datetime") from None


def storable(text: str) -> None:
    """Text both databases store as sent: no NUL (PostgreSQL refuses it), no lone surrogate."""
    if "\x00" in text:
        raise ValidationError("NUL characters are not allowed.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Not valid Unicode (a lone surrogate).") from None


def text_rules(longest: int, shortest: int = 0) -> list:
    return [validate.Length(min=shortest or None, max=longest), storable]


def _text(description: str) -> fields.String:
    return fields.String(validate=text_rules(255), metadata={"description": description})


def record_field(field: Field, note: str = "") -> fields.Field:
    """The marshmallow field for one registry field, with its unit and bounds."""
    unit = f" Unit: {field.unit}." if field.unit else ""
    meta = {"description": f"{field.description}{unit} {note}".strip()}
    if field.type == "string":
        return fields.String(required=field.required, validate=text_rules(field.max_length), metadata=meta)
    bounds = validate.Range(min=field.low, max=field.high)
    cls = StrictInteger if field.type == "integer" else StrictNumber
    return cls(required=field.required, validate=bounds, metadata=meta)


def _identity_fields() -> dict[str, fields.Field]:
    return {
        "timestamp": Timestamp(
            required=True,
            metadata={"description": "End of the sample, ISO 8601; without an offset it is UTC."},
        ),
        "gpuIndex": StrictInteger(
            required=True,
            validate=validate.Range(min=0, max=2**31 - 1),
            metadata={"description": "NVML index of the GPU on its host."},
        ),
        "host": _text("Host the GPU is in; records without one belong to the local host."),
        "uuid": _text("NVML UUID of the GPU."),
        "name": _text("Product name of the GPU."),
    }


class Lenient(Schema):
    """Crawlers add fields over time: unknown keys are ignored, not errors."""

    class Meta:
        unknown = EXCLUDE


def _record_schema(kind) -> type[Schema]:
    declared = {
        **_identity_fields(),
        "metric": fields.String(
            required=True,
            validate=validate.Equal(kind.name),
            metadata={"description": f"The kind of record: `{kind.name}`. {kind.description}"},
        ),
        **{f.name: record_field(f) for f in kind.fields},
    }
    return Lenient.from_dict(declared, name=f"{kind.name.capitalize()}Record")


# One schema class per kind, e.g. MemoryRecord; instances are reused (they are stateless).
RECORD_SCHEMAS: dict[str, type[Schema]] = {name: _record_schema(kind) for name, kind in KINDS.items()}
RECORD_LOADERS: dict[str, Schema] = {name: cls() for name, cls in RECORD_SCHEMAS.items()}


# The fields every record shares: checked alone when `metric` is missing or unknown.
IDENTITY_LOADER: Schema = Lenient.from_dict(_identity_fields(), name="RecordIdentity")()


# ---- responses -------------------------------------------------------------------


class Rejection(Schema):
    index = fields.Integer(
        required=True, metadata={"description": "Position of the record in the request (0 for a single record)."}
    )
    errors = fields.Dict(
        required=True,
        metadata={"description": "Field name to its error messages."},
    )


class IngestResult(Schema):
    stored = fields.Integer(required=True, metadata={"description": "Records stored by this request."})
    duplicates = fields.Integer(
        required=True,
        metadata={"description": "Valid records already stored earlier (same host, GPU, metric, timestamp, pid)."},
    )
    rejected = fields.List(fields.Nested(Rejection), required=True, metadata={"description": "Invalid records."})


class IngestRejected(IngestResult):
    """The 422 of POST /metrics: the ingest result, in the shape of every error answer too."""

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
        "uuid": fields.String(metadata={"description": "GPU UUID, when known."}),
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
    items = fields.List(fields.Nested(StoredRecord), required=True)
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


# ---- query arguments ---------------------------------------------------------------


class Window(Schema):
    """Filters shared by the read endpoints."""

    class Meta:
        unknown = EXCLUDE

    gpuIndex = fields.Integer(
        validate=validate.Range(min=0, max=2**31 - 1), metadata={"description": "Only this GPU index."}
    )
    host = fields.String(validate=text_rules(255), metadata={"description": "Only this host."})
    uuid = fields.String(validate=text_rules(255), metadata={"description": "Only the GPU with this UUID."})
    start = Timestamp(metadata={"description": "Records at or after this time (ISO 8601; naive means UTC)."})
    end = Timestamp(metadata={"description": "Records at or before this time (ISO 8601; naive means UTC)."})


class MetricsQuery(Window):
    metric = fields.String(validate=validate.OneOf(list(KINDS)), metadata={"description": "Only this kind."})
    limit = fields.Integer(
        load_default=1000,
        validate=validate.Range(min=1, max=10000),
        metadata={"description": "Records per page, 1 to 10000."},
    )
    order = fields.String(
        load_default="asc",
        validate=validate.OneOf(["asc", "desc"]),
        metadata={"description": "By timestamp: asc (oldest first) or desc."},
    )
    cursor = fields.String(validate=text_rules(200), metadata={"description": "The `next` of the previous page."})
    aggregate = fields.String(
        validate=validate.OneOf(AGGREGATES),
        metadata={"description": "Answer one aggregate over the filtered records instead of records."},
    )
    field = fields.String(
        validate=validate.OneOf(MEASURED_FIELDS),
        metadata={"description": "Field to aggregate; required except for count."},
    )

    @validates_schema
    def _aggregate_needs(self, data, **kwargs):
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
        if data.get("cursor") is not None:
            raise ValidationError("cursor does not apply to aggregates.", "cursor")


class StatsQuery(Window):
    pass
