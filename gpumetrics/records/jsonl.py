"""The one JSONL reader, for the file tailer and the import command alike.

A file is read a chunk at a time, each chunk cut after its last complete line; a line
is one record or an array of records. A line longer than MAX_LINE_BYTES is rejected
without being held in memory. A last line without its newline waits for the rest,
unless the file is finished (it will not grow any more).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .jsonparse import loads
from .validate import TimeWindow, as_items, describe, validate

CHUNK_BYTES = 256 << 10  # per transaction: ~30 ms of holding the write lock (bench/tail.py)
MAX_LINE_BYTES = 16 << 20


@dataclass
class Lines:
    """A run of complete lines, decoded and validated."""

    size: int = 0  # bytes of the file they cover
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # gpumon_client's
    read: int = 0  # non-blank lines
    last: int = 0  # number of the last line, blank or not
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def read_lines(
    handle: IO[bytes],
    line: int,
    finished: bool,
    window: TimeWindow | None = None,
    chunk_bytes: int | None = None,
) -> Iterator[Lines]:
    """Every run of complete lines from the handle's position on; `line` numbers the last line before it.

    Each run is at most `chunk_bytes` (default CHUNK_BYTES; one long line may be more).
    The handle is left just after the last run yielded.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    while True:
        start = handle.tell()
        chunk = handle.read(chunk_bytes)
        end = chunk.rfind(b"\n") + 1
        data: bytes | None = chunk[:end]
        if chunk and end == 0:
            data, end = _long_line(handle, chunk, finished)
        if end == 0:
            handle.seek(start)
            return
        lines = _oversize(end, line) if data is None else decode_lines(data, line, window)
        lines.size = end
        handle.seek(start + end)
        yield lines
        line = lines.last


def _long_line(handle: IO[bytes], chunk: bytes, finished: bool) -> tuple[bytes | None, int]:
    """A chunk without a newline: a line longer than a chunk, or an incomplete last line.

    Returns (line, length): (b"", 0) to wait for the rest; (None, length) for a
    complete line over MAX_LINE_BYTES, which is skipped without being held in memory.
    """
    parts, size = [chunk], len(chunk)
    while True:
        more = handle.read(len(chunk))
        newline = more.find(b"\n")
        if not more and not finished:
            return b"", 0
        piece = more if newline < 0 else more[: newline + 1]
        size += len(piece)
        if size <= MAX_LINE_BYTES:
            parts.append(piece)
        if not more or newline >= 0:
            return (b"".join(parts) if size <= MAX_LINE_BYTES else None), size


def _oversize(size: int, line: int) -> Lines:
    reason = f"line of {size} bytes is longer than {MAX_LINE_BYTES}"
    return Lines(read=1, last=line + 1, rejected=[(line + 1, reason)])


def _decode_clean_lines(raws: list[bytes], line: int, window: TimeWindow | None) -> Lines | None:
    """All lines at once, when each is one valid record: one JSON parse for the chunk.

    None for anything else (a blank line, an array, a bad line), which then goes line
    by line so that every rejection keeps its line number.
    """
    if not raws or not all(raws):
        return None
    try:
        items = loads(b"[" + b",".join(raws) + b"]")
    except (ValueError, RecursionError):
        return None
    if len(items) != len(raws) or not all(isinstance(item, dict) for item in items):
        return None
    checked = validate(items, window)
    if checked.rejected:
        return None
    return Lines(records=checked.records, events=checked.events, read=len(raws), last=line + len(raws))


def decode_lines(data: bytes, line: int = 0, window: TimeWindow | None = None) -> Lines:
    """Decode and validate JSONL `data` whose first line follows line number `line`.

    A line that is not JSON, or that holds an invalid record, is rejected with its
    number; its valid records are kept.
    """
    raws = data.split(b"\n")
    if raws[-1] == b"":
        raws.pop()
    fast = _decode_clean_lines(raws, line, window)
    if fast is not None:
        return fast
    out = Lines()
    for raw in raws:
        line += 1
        if not raw.strip():
            continue
        out.read += 1
        try:
            parsed = loads(raw)
            items = as_items(parsed)
        except (ValueError, RecursionError) as error:
            out.rejected.append((line, f"not JSON records: {error}"))
            continue
        checked = validate(items, window)
        out.records += checked.records
        out.events += checked.events
        if checked.rejected:
            one = isinstance(parsed, dict)
            out.rejected.append((line, f"invalid record{'' if one else 's'}: {describe(checked.rejected, one)}"))
    out.last = line
    return out
