"""UTC timestamps as integer microseconds since the epoch, and their ISO 8601 form.

SQLite keeps no time zone, so every time is stored as an integer: exact, compact and
fast to compare and bucket. Naive input means UTC; output always ends in Z.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICRO = timedelta(microseconds=1)


def parse_iso(text: str) -> int:
    """ISO 8601 text to epoch microseconds; naive means UTC. Raises ValueError."""
    # fromisoformat stops reading at a NUL, so text with one would pass for its prefix.
    if not isinstance(text, str) or not 10 <= len(text) <= 64 or "\x00" in text:
        raise ValueError("Not a valid ISO 8601 datetime.")
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)  # out of range (year 0 or 10000) in UTC: an error here
        return (moment - _EPOCH) // _MICRO
    except (ValueError, OverflowError):
        raise ValueError("Not a valid ISO 8601 datetime.") from None


def to_iso(micros: int) -> str:
    """Epoch microseconds to ISO 8601 UTC ending in Z; microseconds only when present."""
    return (_NAIVE_EPOCH + timedelta(microseconds=micros)).isoformat() + "Z"


def now_micros() -> int:
    return (datetime.now(UTC) - _EPOCH) // _MICRO
