"""Input records (as POSTed or read from JSONL) to validated canonical records.

A canonical record is a dict: timestamp (epoch microseconds, UTC), gpuIndex, metric,
optional host/uuid/name, and the fields of its kind. Every path into the database
goes through `validate`, whichever way the records came.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from . import crawler
from .fastpath import ACCEPTORS
from .kinds import KINDS
from .schemas import IDENTITY_LOADER, RECORD_LOADERS

_UNKNOWN_METRIC = [f"Must be one of: {', '.join(KINDS)}."]


@dataclass
class Checked:
    """The outcome of validating a list of input records."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def as_items(body: Any) -> list[Any]:
    """A decoded JSON body or line: one record (object) or an array of records."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return body
    raise ValueError("expected a JSON object (one record) or an array of records")


def load_record(item: Any) -> dict[str, Any]:
    """One input record to its canonical form; raises ValidationError with field errors."""
    if not isinstance(item, dict):
        raise ValidationError({"_schema": ["A record must be a JSON object."]})
    metric = item.get("metric")
    if not isinstance(metric, str):
        metric = None
    accept = ACCEPTORS.get(metric)
    if accept is not None:
        accepted = accept(item)
        if accepted is not None:
            return accepted
    loader = RECORD_LOADERS.get(metric)
    if loader is None:
        errors: dict[str, Any] = {
            "metric": ["Missing data for required field."] if "metric" not in item else _UNKNOWN_METRIC
        }
        try:
            IDENTITY_LOADER.load(item)
        except ValidationError as err:
            errors.update(err.messages)  # type: ignore[arg-type]
        raise ValidationError(errors)
    return loader.load(item)


def load_item(item: Any) -> list[dict[str, Any]]:
    """One input item, in either format, to its canonical records."""
    if isinstance(item, dict) and crawler.is_crawler_record(item):
        metric_type = item["metricType"]
        loader = crawler.LOADERS.get(metric_type) if isinstance(metric_type, str) else None
        if loader is None:
            raise ValidationError({"metricType": [f"Must be one of: {', '.join(crawler.LOADERS)}."]})
        return crawler.split(loader.load(item))
    return [load_record(item)]


def validate(items: list[Any], first_index: int = 0) -> Checked:
    """Validate every item; invalid ones are reported by position, never raised."""
    checked = Checked()
    for position, item in enumerate(items, first_index):
        try:
            checked.records += load_item(item)
        except ValidationError as err:
            checked.rejected.append({"index": position, "errors": err.messages})
    return checked


@dataclass
class Lines:
    """The outcome of decoding a run of JSONL lines."""

    records: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0  # non-blank lines
    last: int = 0  # number of the last line, blank or not
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _decode_clean_lines(raws: list[bytes], line: int) -> Lines | None:
    """All lines at once, when each is one valid record: one JSON parse for the chunk.

    None for anything else (a blank line, an array, a bad line), which then goes line
    by line so that every rejection keeps its line number.
    """
    if not raws or not all(raws):
        return None
    try:
        items = json.loads(b"[" + b",".join(raws) + b"]")
    except (ValueError, RecursionError):
        return None
    if len(items) != len(raws) or not all(isinstance(item, dict) for item in items):
        return None
    checked = validate(items)
    if checked.rejected:
        return None
    return Lines(records=checked.records, read=len(raws), last=line + len(raws))


def decode_lines(data: bytes, line: int = 0) -> Lines:
    """Decode and validate JSONL `data` whose first line follows line number `line`.

    A line is one record or an array of records. A line that is not JSON, or that
    holds an invalid record, is rejected with its number; its valid records are kept.
    """
    out = Lines()
    raws = data.split(b"\n")
    if raws[-1] == b"":
        raws.pop()
    fast = _decode_clean_lines(raws, line)
    if fast is not None:
        return fast
    for raw in raws:
        line += 1
        if not raw.strip():
            continue
        out.read += 1
        try:
            items = as_items(json.loads(raw))
        except (ValueError, RecursionError) as error:
            out.rejected.append((line, f"not JSON records: {error}"))
            continue
        checked = validate(items)
        out.records += checked.records
        if checked.rejected:
            out.rejected.append((line, f"invalid records: {checked.rejected}"))
    out.last = line
    return out
