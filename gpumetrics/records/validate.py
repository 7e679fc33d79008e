"""Input records, in any format, to validated canonical records: the one entry point.

A canonical record is a dict: timestamp (epoch microseconds, UTC), gpuIndex, metric,
optional host/uuid/name, and the fields of its kind. Every path into the database goes
through `validate`, whichever way the records came (POST, a tailed file, `import`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from .. import times
from ..kinds import IDENTITY, KINDS, Field
from . import crawler, events
from .schemas import ACCEPTORS, IDENTITY_LOADER, RECORD_LOADERS

_UNKNOWN_METRIC = [f"Must be one of: {', '.join(KINDS)}."]


@dataclass(frozen=True)
class TimeWindow:
    """The times a record may carry: not too far ahead of the server, not older than kept.

    A record ahead of the clock would stay the "latest" value for ever; one older than
    everything the service keeps (records and their rollups) would be deleted at the
    next retention run.
    """

    now: int
    ahead_sec: float | None = None  # MAX_CLOCK_SKEW_SEC; None: no limit
    kept_hours: float | None = None  # METRICS_RETENTION_HOURS; None: kept for ever
    rollup_days: float | None = None  # ROLLUP_RETENTION_DAYS; None: kept for ever

    @classmethod
    def from_settings(cls, settings: Any) -> TimeWindow:
        return cls(
            times.now_micros(),
            settings.max_clock_skew_sec,
            settings.metrics_retention_hours,
            settings.rollup_retention_days,
        )

    def refuse(self, ts: int) -> str | None:
        """Why a record at `ts` is refused, or None."""
        if self.ahead_sec is not None and ts > self.now + int(self.ahead_sec * 1e6):
            return (
                f"More than MAX_CLOCK_SKEW_SEC={self.ahead_sec:g} seconds ahead of the server's time, "
                f"{times.to_iso(self.now)}."
            )
        if self.kept_hours is None or self.rollup_days is None:
            return None  # the records, or their rollups, are kept for ever
        kept = f"METRICS_RETENTION_HOURS={self.kept_hours:g}"
        if self.rollup_days * 24 > self.kept_hours:
            kept = f"ROLLUP_RETENTION_DAYS={self.rollup_days:g} (the rollups; the records: {kept})"
        oldest = self.now - int(max(self.kept_hours, self.rollup_days * 24) * 3600e6)
        if ts < oldest:
            return f"Older than {kept}: nothing before {times.to_iso(oldest)} is kept."
        return None


@dataclass
class Checked:
    """The outcome of validating a list of input records."""

    records: list[dict[str, Any]] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)  # the position of each record's input item
    events: list[dict[str, Any]] = field(default_factory=list)  # gpumon_client events, validated
    event_origins: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "errors"}
    warnings: list[dict[str, Any]] = field(default_factory=list)  # {"index", "field", "message"}


def as_items(body: Any) -> list[Any]:
    """A decoded JSON body or line: one record (object) or an array of records."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return body
    raise ValueError("expected a JSON object (one record) or an array of records")


def _cut_fields(fields: Sequence[Field]) -> tuple[tuple[str, int], ...]:
    return tuple((f.name, f.max_length) for f in fields if f.cut and f.max_length is not None)


# Per format: the free-text fields stored cut to their limit rather than rejected.
_CUTS = {name: _cut_fields(IDENTITY + kind.fields) for name, kind in KINDS.items()}
_CRAWLER_CUTS = {name: _cut_fields(crawler.fields_of(name)) for name in crawler.FIELDS_BY_TYPE}


def _cut(item: dict[str, Any], cuts: tuple[tuple[str, int], ...]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The item with over-long free text cut to its limit, and a warning for each cut."""
    notes = []
    for name, longest in cuts:
        value = item.get(name)
        if isinstance(value, str) and len(value) > longest:
            item = {**item, name: value[:longest]}
            notes.append({"field": name, "message": f"cut to {longest} characters"})
    return item, notes


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _load_canonical(item: dict[str, Any]) -> dict[str, Any]:
    metric = _text_or_none(item.get("metric"))
    accept = ACCEPTORS.get(metric) if metric is not None else None
    accepted = accept(item) if accept is not None else None
    if accepted is not None:
        return accepted
    loader = RECORD_LOADERS.get(metric) if metric is not None else None
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


def load_item(item: Any, window: TimeWindow | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """One input item, in either format, to its canonical records and the warnings about it.

    Raises ValidationError with the item's field errors.
    """
    if not isinstance(item, dict):
        raise ValidationError({"_schema": ["A record must be a JSON object."]})
    if crawler.is_crawler_record(item):
        item, notes = _cut(item, _CRAWLER_CUTS.get(_text_or_none(item["metricType"]), ()))
        records = _load_crawler(item)
    else:
        item, notes = _cut(item, _CUTS.get(_text_or_none(item.get("metric")), ()))
        records = [_load_canonical(item)]
    refusal = window.refuse(records[0]["timestamp"]) if window is not None and records else None
    if refusal is not None:
        raise ValidationError({"timestamp": [refusal]})
    return records, notes


def describe(rejected: list[dict[str, Any]], one_item: bool = False) -> str:
    """Rejections as one readable line: `record 2: celsius: Not a valid number.`"""
    parts = []
    for item in rejected:
        errors = "; ".join(f"{name}: {' '.join(_flat(messages))}" for name, messages in item["errors"].items())
        parts.append(errors if one_item else f"record {item['index']}: {errors}")
    return "; ".join(parts)


def _flat(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{key}: {' '.join(_flat(value))}" for key, value in messages.items()]
    if isinstance(messages, list):
        return [text for message in messages for text in _flat(message)]
    return [str(messages)]


def validate(items: list[Any], window: TimeWindow | None = None, first_index: int = 0) -> Checked:
    """Validate every item; invalid ones are reported by position, never raised."""
    checked = Checked()
    for position, item in enumerate(items, first_index):
        try:
            if isinstance(item, dict) and events.is_event(item):
                checked.events.append(events.load_event(item))
                checked.event_origins.append(position)
                continue
            records, notes = load_item(item, window)
        except ValidationError as err:
            checked.rejected.append({"index": position, "errors": err.messages})
            continue
        checked.records += records
        checked.origins += [position] * len(records)
        checked.warnings += [{"index": position, **note} for note in notes]
    return checked
