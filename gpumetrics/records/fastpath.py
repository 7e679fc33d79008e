"""A fast acceptor for valid records, compiled from the same registry fields as the schemas.

marshmallow (schemas.py, crawler.py) is the validator of record: its messages are what a
client sees. It costs ~20 µs a record, most of the ingest budget, so each format also
gets a plain function, compiled from the very Field tuples its marshmallow schema is
built from, that accepts a record only when marshmallow would, and returns exactly what
marshmallow would return. Anything it is not sure of returns None and goes to
marshmallow. tests/records/test_fastpath.py holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import times
from ..kinds import INT64_MAX, MAGNITUDE, Field

_MISSING = object()

Acceptor = Callable[[dict[str, Any]], dict[str, Any] | None]


def _text(value: Any, shortest: int, longest: int | None) -> Any:
    if type(value) is not str or len(value) < shortest or (longest is not None and len(value) > longest):
        return _MISSING
    if "\x00" in value:
        return _MISSING
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _MISSING
    return value


def _timestamp(value: Any) -> Any:
    if type(value) is not str:
        return _MISSING
    try:
        return times.parse_iso(value)
    except ValueError:
        return _MISSING


def _loader(field: Field) -> Callable[[Any], Any]:
    """The loaded value of one field, or _MISSING."""
    if field.type == "timestamp":
        return _timestamp
    if field.type == "string":
        shortest, longest = field.min_length, None if field.cut else field.max_length
        return lambda value: _text(value, shortest, longest)
    low, high = field.low, field.high
    if field.type == "integer":
        assert -INT64_MAX <= low <= high <= INT64_MAX, field  # what a BIGINT holds

        def integer(value: Any) -> Any:
            kind = type(value)
            if kind is int and low <= value <= high:
                return value
            if kind is float and low <= value <= high and value.is_integer():  # 1234.0 is 1234
                return int(value)
            return _MISSING

        return integer

    # Every bound is within ±MAGNITUDE, so a value within them is finite and converts to
    # float exactly as marshmallow converts it.
    assert -MAGNITUDE <= low <= high <= MAGNITUDE, field

    def number(value: Any) -> Any:
        kind = type(value)
        if (kind is float or kind is int) and low <= value <= high:  # NaN compares false
            return float(value)
        return _MISSING

    return number


def compile_fields(fields: Sequence[Field], tag: tuple[str, str]) -> Acceptor:
    """An acceptor for records whose `tag[0]` is `tag[1]` and whose fields are `fields`."""
    plan = [(field.name, field.required, _loader(field)) for field in fields]
    key, value = tag

    def accept(item: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {key: value}
        for name, required, load in plan:
            raw = item.get(name, _MISSING)
            if raw is _MISSING:
                if required:
                    return None
                continue
            loaded = load(raw)
            if loaded is _MISSING:
                return None
            out[name] = loaded
        return out

    return accept
