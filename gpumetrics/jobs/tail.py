"""Tail a JSONL file into the database: nothing lost, nothing stored twice.

The read position and the file's identity (device, inode) are saved in the same
transaction as the records they produced, so after a crash at any moment the next
poll resumes exactly where the last commit left off. Rotation (rename + new file) and
truncation (copy-truncate) are noticed at each poll; the rest of a renamed file is read
when it can still be found in the same folder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from ..db import Database
from ..records import jsonl
from ..store.jobs import Checkpoint, load_checkpoint, save_checkpoint
from ..store.write import prepare, store_records

log = logging.getLogger(__name__)


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
            consumed, checkpoint = self._finish_rotated(checkpoint)
            if stat is None:
                return consumed
            log.info("%s: rotated; reading the new file from its start", self.path)
            checkpoint = replace(checkpoint, device=stat.st_dev, inode=stat.st_ino, position=0, line=0)
            self._save(checkpoint)
        if stat is None:
            return consumed
        if checkpoint is None:
            checkpoint = Checkpoint(device=stat.st_dev, inode=stat.st_ino)
        elif stat.st_size < checkpoint.position:
            log.warning("%s: truncated; reading it again from its start", self.path)
            checkpoint = replace(checkpoint, position=0, line=0)
        more, _ = self._consume(self.path, checkpoint, finished=False)
        return consumed + more

    def _finish_rotated(self, checkpoint: Checkpoint) -> tuple[int, Checkpoint]:
        """Read the rest of the file the checkpoint is about, if it is still in the folder."""
        old = _renamed(self.path, checkpoint.device, checkpoint.inode)
        if old is None:
            return 0, checkpoint
        return self._consume(old, checkpoint, finished=True)

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
            for lines in jsonl.read_lines(handle, checkpoint.line, finished):
                consumed += lines.last - checkpoint.line
                checkpoint = self._store(lines, checkpoint, os.fstat(handle.fileno()).st_size)
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self.more = True
                    return consumed, checkpoint
            behind = max(os.fstat(handle.fileno()).st_size - checkpoint.position, 0)
        if behind != checkpoint.bytes_behind:  # a partial line came or went
            checkpoint = replace(checkpoint, bytes_behind=behind)
            self._save(checkpoint)
        return consumed, checkpoint

    def _store(self, lines: jsonl.Lines, checkpoint: Checkpoint, size: int) -> Checkpoint:
        """Store the records of `lines` and the new position together."""
        for line, reason in lines.rejected:
            log.warning("%s:%d: rejected: %s", self.path, line, reason)
        batch = prepare(lines.records)
        position = checkpoint.position + lines.size
        with self.db.writing() as session:
            stored = store_records(session, batch)
            new = replace(
                checkpoint,
                position=position,
                line=lines.last,
                lines_read=checkpoint.lines_read + lines.read,
                records_stored=checkpoint.records_stored + stored.stored,
                duplicates=checkpoint.duplicates + stored.duplicates,
                lines_rejected=checkpoint.lines_rejected + len(lines.rejected),
                bytes_behind=max(size - position, 0),
            )
            save_checkpoint(session, self.host, self.key, new)
        return new

    def _save(self, checkpoint: Checkpoint) -> None:
        with self.db.writing() as session:
            save_checkpoint(session, self.host, self.key, checkpoint)
