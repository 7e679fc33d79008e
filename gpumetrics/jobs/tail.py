"""Tail a JSONL file into the database: nothing lost, nothing stored twice.

The read position and the file's identity (device, inode) are saved in the same
transaction as the records they produced, so after a crash at any moment the next
poll resumes exactly where the last commit left off. A last line without its newline
waits until it is complete. Rotation (rename + new file) and truncation (copy-truncate)
are noticed at each poll; the rest of a renamed file is read when it can still be found
in the same folder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import insert as sql_insert
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import ingest, store, times
from ..db import Database
from ..models import tail_files

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 << 10  # per transaction: ~30 ms of holding the write lock (bench/tail.py)
MAX_LINE_BYTES = 16 << 20


@dataclass(frozen=True)
class Checkpoint:
    """Where one file was read up to, and what its lines gave."""

    device: int
    inode: int
    position: int = 0
    line: int = 0  # number of the last line consumed
    lines_read: int = 0
    records_stored: int = 0
    duplicates: int = 0
    lines_rejected: int = 0


def load_checkpoint(session: Session, host: str, path: str) -> Checkpoint | None:
    row = session.execute(select(tail_files).where(tail_files.c.host == host, tail_files.c.path == path)).first()
    if row is None:
        return None
    return Checkpoint(**{name: getattr(row, name) for name in Checkpoint.__dataclass_fields__})


def save_checkpoint(session: Session, host: str, path: str, checkpoint: Checkpoint) -> None:
    values = {**checkpoint.__dict__, "updated_at": times.now_micros()}
    where = (tail_files.c.host == host, tail_files.c.path == path)
    if session.execute(update(tail_files).where(*where).values(**values)).rowcount == 0:
        session.execute(sql_insert(tail_files).values(host=host, path=path, **values))


def _identity(stat: os.stat_result | None) -> tuple[int, int] | None:
    return None if stat is None else (stat.st_dev, stat.st_ino)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _renamed(path: Path, device: int, inode: int) -> Path | None:
    """The file that used to be `path`, if it is still in the same folder under a new name."""
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return None
    for entry in entries:
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if (stat.st_dev, stat.st_ino) == (device, inode):
            return Path(entry.path)
    return None


class Tailer:
    """Ingests one JSONL file; `poll()` consumes every complete line not yet stored."""

    def __init__(self, db: Database, path: str | Path, host: str) -> None:
        self.db = db
        self.path = Path(path).absolute()
        self.key = str(self.path)
        self.host = host
        self.deadline: float | None = None
        self.more = False

    def poll(self, deadline: float | None = None) -> int:
        """Ingest what is new; returns the number of lines consumed.

        With a `deadline` (time.monotonic()), stops between chunks once it has passed,
        leaving `self.more` set so the caller can come back at once.
        """
        self.deadline, self.more = deadline, False
        with self.db.reading() as session:
            checkpoint = load_checkpoint(session, self.host, self.key)
        stat = _stat(self.path)
        consumed = 0
        if checkpoint is not None and _identity(stat) != (checkpoint.device, checkpoint.inode):
            old = _renamed(self.path, checkpoint.device, checkpoint.inode)
            if old is not None:
                consumed, checkpoint = self._consume(old, checkpoint, finished=True)
            if stat is None:
                return consumed
            log.info("%s: rotated; reading the new file from its start", self.path)
            checkpoint = replace(checkpoint, device=stat.st_dev, inode=stat.st_ino, position=0, line=0)
            with self.db.writing() as session:
                save_checkpoint(session, self.host, self.key, checkpoint)
        if stat is None:
            return consumed
        if checkpoint is None:
            checkpoint = Checkpoint(device=stat.st_dev, inode=stat.st_ino)
        elif stat.st_size < checkpoint.position:
            log.warning("%s: truncated; reading it again from its start", self.path)
            checkpoint = replace(checkpoint, position=0, line=0)
        more, _ = self._consume(self.path, checkpoint, finished=False)
        return consumed + more

    def behind(self) -> int | None:
        """Bytes of the file not yet consumed (None when it does not exist)."""
        stat = _stat(self.path)
        if stat is None:
            return None
        with self.db.reading() as session:
            checkpoint = load_checkpoint(session, self.host, self.key)
        if checkpoint is None or (checkpoint.device, checkpoint.inode) != _identity(stat):
            return stat.st_size
        return max(stat.st_size - checkpoint.position, 0)

    def _consume(self, path: Path, checkpoint: Checkpoint, finished: bool) -> tuple[int, Checkpoint]:
        """Read complete lines from the checkpoint on, one transaction per chunk.

        `finished`: the file will not grow any more (it was rotated away), so a last
        line without a newline is taken as it is.
        """
        consumed = 0
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return 0, checkpoint
        with handle:
            if _identity(os.fstat(handle.fileno())) != (checkpoint.device, checkpoint.inode):
                return 0, checkpoint  # replaced between stat and open: next poll sorts it out
            handle.seek(checkpoint.position)
            while True:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self.more = True
                    break
                chunk: bytes | None = handle.read(CHUNK_BYTES)
                end = chunk.rfind(b"\n") + 1
                if chunk and end == 0:
                    chunk, end = self._long_line(handle, chunk, finished)
                if end == 0:
                    break
                if chunk is None:
                    checkpoint = self._reject_oversize(end, checkpoint)
                    consumed += 1
                else:
                    checkpoint, lines = self._store_lines(chunk[:end], checkpoint)
                    consumed += lines
                handle.seek(checkpoint.position)
        return consumed, checkpoint

    @staticmethod
    def _long_line(handle, chunk: bytes, finished: bool) -> tuple[bytes | None, int]:
        """A chunk without a newline: a line longer than a chunk, or an incomplete last line.

        Returns (line, length): (b"", 0) to wait for the rest; (None, length) for a
        complete line over MAX_LINE_BYTES, which is skipped without being held in memory.
        """
        parts, size = [chunk], len(chunk)
        while True:
            more = handle.read(CHUNK_BYTES)
            newline = more.find(b"\n")
            if not more and not finished:
                return b"", 0
            piece = more if newline < 0 else more[: newline + 1]
            size += len(piece)
            if size <= MAX_LINE_BYTES:
                parts.append(piece)
            if not more or newline >= 0:
                return (b"".join(parts) if size <= MAX_LINE_BYTES else None), size

    def _reject_oversize(self, size: int, checkpoint: Checkpoint) -> Checkpoint:
        line = checkpoint.line + 1
        log.warning("%s:%d: rejected: line of %d bytes is longer than %d", self.path, line, size, MAX_LINE_BYTES)
        checkpoint = replace(
            checkpoint,
            position=checkpoint.position + size,
            line=line,
            lines_read=checkpoint.lines_read + 1,
            lines_rejected=checkpoint.lines_rejected + 1,
        )
        with self.db.writing() as session:
            save_checkpoint(session, self.host, self.key, checkpoint)
        return checkpoint

    def _store_lines(self, data: bytes, checkpoint: Checkpoint) -> tuple[Checkpoint, int]:
        """Validate the lines of `data`, then store their records and the new position together."""
        lines = ingest.decode_lines(data, checkpoint.line)
        for line, reason in lines.rejected:
            log.warning("%s:%d: rejected: %s", self.path, line, reason)
        prepared = store.prepare(lines.records)
        with self.db.writing() as session:
            stored, duplicates = store.insert(session, prepared)
            new = replace(
                checkpoint,
                position=checkpoint.position + len(data),
                line=lines.last,
                lines_read=checkpoint.lines_read + lines.read,
                records_stored=checkpoint.records_stored + stored,
                duplicates=checkpoint.duplicates + duplicates,
                lines_rejected=checkpoint.lines_rejected + len(lines.rejected),
            )
            save_checkpoint(session, self.host, self.key, new)
        return new, new.line - checkpoint.line
