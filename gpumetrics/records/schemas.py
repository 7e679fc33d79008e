"""Marshmallow schemas of the canonical record format, built from the kind registry.

They are the validator of record: their messages are what a client sees and they are
what the OpenAPI document shows. Record fields are strict: a JSON string, boolean, NaN
or Infinity where a number belongs is an error, never coerced, because a crawler bug
should be seen, not stored.
"""

from __future__ import annotations

import math

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .. import times
from ..kinds import IDENTITY, INT64_MAX, KINDS, Field
from .fastpath import Acceptor, compile_fields


class OutOfRange:
    """A JSON integer with more digits than Python converts (see records/jsonparse.py)."""

    def __init__(self, digits: str) -> None:
        self.digits = digits


NUMBER_ERRORS = {
    "invalid": "Not a valid number.",
    "special": "Not a finite number.",
    "too_large": "Out of range.",
}


class StrictNumber(fields.Float):
    """A JSON number only; finite; stored as a float."""

    default_error_messages = NUMBER_ERRORS

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, OutOfRange):
            raise self.make_error("too_large")
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
    """A JSON integer (no "3"; 3.0 is 3, 3.5 is no integer), within a signed 64-bit range."""

    default_error_messages = {**NUMBER_ERRORS, "invalid": "Not a valid integer."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, OutOfRange):
            raise self.make_error("too_large")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.make_error("special")
            if not value.is_integer():
                raise self.make_error("invalid")
            value = int(value)
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


def text_rules(longest: int | None, shortest: int = 0) -> list:
    if longest is None and not shortest:
        return [storable]
    return [validate.Length(min=shortest or None, max=longest), storable]


def _bound(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else f"{number:g}"


def record_field(field: Field, note: str = "") -> fields.Field:
    """The marshmallow field for one registry field, with its unit and bounds."""
    unit = f" Unit: {field.unit}." if field.unit else ""
    meta = {"description": f"{field.description}{unit} {note}".strip()}
    if field.type == "timestamp":
        return Timestamp(required=field.required, metadata=meta)
    if field.type == "string":
        if field.cut:  # cut to its limit before loading: longer text is accepted, with a warning
            meta["description"] += f" Longer text is stored cut to {field.max_length} characters, with a warning."
            return fields.String(required=field.required, validate=text_rules(None, field.min_length), metadata=meta)
        rules = text_rules(field.max_length, field.min_length)
        return fields.String(required=field.required, validate=rules, metadata=meta)
    bounds = validate.Range(
        min=field.low, max=field.high, error=f"Must be from {_bound(field.low)} to {_bound(field.high)}."
    )
    cls = StrictInteger if field.type == "integer" else StrictNumber
    return cls(required=field.required, validate=bounds, metadata=meta)


def _identity_fields() -> dict[str, fields.Field]:
    return {field.name: record_field(field) for field in IDENTITY}


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
ACCEPTORS: dict[str, Acceptor] = {
    name: compile_fields(IDENTITY + kind.fields, ("metric", name)) for name, kind in KINDS.items()
}


# The fields every record shares: checked alone when `metric` is missing or unknown.
IDENTITY_LOADER: Schema = Lenient.from_dict(_identity_fields(), name="RecordIdentity")()
