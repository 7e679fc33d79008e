"""Input records, in any format, to validated canonical records: the one entry point.

A canonical record is a dict: timestamp (epoch microseconds, UTC), gpuIndex, metric,
optional host/uuid/name, and the fields of its kind. Every path into the database goes
through `validate`, whichever way the records came (POST, a tailed file, `import`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from ..kinds import KINDS
from . import crawler
from .schemas import ACCEPTORS, IDENTITY_LOADER, RECORD_LOADERS

_UNKNOWN_METRIC = [f"Must be one of: {', '.join(KINDS)}."]


@dataclass
class Checked:
    """The outcome of validating a list of input records."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "errors"}


def as_items(body: Any) -> list[Any]:
    """A decoded JSON body or line: one record (object) or an array of records."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return body
    raise ValueError("expected a JSON object (one record) or an array of records")


def _load_canonical(item: dict[str, Any]) -> dict[str, Any]:
    metric = item.get("metric")
    if not isinstance(metric, str):
        metric = None
    accept = ACCEPTORS.get(metric)  # type: ignore[arg-type]
    accepted = accept(item) if accept is not None else None
    if accepted is not None:
        return accepted
    loader = RECORD_LOADERS.get(metric)  # type: ignore[arg-type]
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


def _load_crawler(item: dict[str, Any]) -> list[dict[str, Any]]:
    metric_type = item["metricType"]
    loader = crawler.LOADERS.get(metric_type) if isinstance(metric_type, str) else None
    if loader is None:
        raise ValidationError({"metricType": [f"Must be one of: {', '.join(crawler.LOADERS)}."]})
    accepted = crawler.ACCEPTORS[metric_type](item)
    if accepted is None or not crawler.identifiable(accepted):
        accepted = loader.load(item)
    return crawler.split(accepted)


def load_item(item: Any) -> list[dict[str, Any]]:
    """One input item, in either format, to its canonical records; raises ValidationError."""
    if not isinstance(item, dict):
        raise ValidationError({"_schema": ["A record must be a JSON object."]})
    if crawler.is_crawler_record(item):
        return _load_crawler(item)
    return [_load_canonical(item)]


def validate(items: list[Any], first_index: int = 0) -> Checked:
    """Validate every item; invalid ones are reported by position, never raised."""
    checked = Checked()
    for position, item in enumerate(items, first_index):
        try:
            checked.records += load_item(item)
        except ValidationError as err:
            checked.rejected.append({"index": position, "errors": err.messages})
    return checked
