"""A fast acceptor for valid records, compiled from the kind registry.

marshmallow (schemas.py) is the validator of record: its messages are what a client
sees, and its schemas are what the OpenAPI document shows. It costs ~20 µs a record,
most of the ingest budget, so each kind also gets a plain function that accepts a
record only when marshmallow would accept it, and returns exactly what marshmallow
would return. Anything it is not sure of returns None and goes to marshmallow.
tests/test_fastpath.py holds the two to the same answers on generated input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import times
from .kinds import KINDS, Kind
from .schemas import INT64_MAX

GPU_INDEX_MAX = 2**31 - 1
IDENTITY_TEXT = ("host", "uuid", "name")
IDENTITY_TEXT_MAX = 255
_MISSING = object()

Acceptor = Callable[[dict[str, Any]], dict[str, Any] | None]


def _number(value: Any, integer: bool) -> Any:
    """The loaded value of a JSON number, or _MISSING when marshmallow must judge it."""
    kind = type(value)
    if integer:
        return value if kind is int and -INT64_MAX <= value <= INT64_MAX else _MISSING
    if kind is float:
        return value if math.isfinite(value) else _MISSING
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return _MISSING
    return _MISSING


def compile_kind(kind: Kind) -> Acceptor:
    numbers = [(f.name, f.required, f.type == "integer", f.low, f.high) for f in kind.fields if f.type != "string"]
    texts = [(f.name, f.required, f.max_length) for f in kind.fields if f.type == "string"]
    texts += [(name, False, IDENTITY_TEXT_MAX) for name in IDENTITY_TEXT]
    metric = kind.name

    def accept(item: dict[str, Any]) -> dict[str, Any] | None:
        stamp, index = item.get("timestamp"), item.get("gpuIndex")
        if type(stamp) is not str or type(index) is not int or not 0 <= index <= GPU_INDEX_MAX:
            return None
        try:
            out = {"timestamp": times.parse_iso(stamp), "gpuIndex": index, "metric": metric}
        except ValueError:
            return None
        for name, required, integer, low, high in numbers:
            value = item.get(name, _MISSING)
            if value is _MISSING:
                if required:
                    return None
                continue
            value = _number(value, integer)
            if value is _MISSING or value < low or value > high:
                return None
            out[name] = value
        for name, required, longest in texts:
            value = item.get(name, _MISSING)
            if value is _MISSING:
                if required:
                    return None
                continue
            if type(value) is not str or (longest is not None and len(value) > longest) or "\x00" in value:
                return None
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return None
            out[name] = value
        return out

    return accept


ACCEPTORS: dict[str, Acceptor] = {name: compile_kind(kind) for name, kind in KINDS.items()}
