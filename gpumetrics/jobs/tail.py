"""Tail a JSONL file into the database: nothing lost, nothing stored twice.

A file is known by its path and its fingerprint: the sha256 of its head, that is its
first line (with its newline), or its first HEAD_BYTES when that line is longer.
Appending never changes it, and two files have different ones because their first
records differ in time (and host); while the first line is incomplete and shorter there
is nothing to read anyway. A file's checkpoint (read position, line number, figures, and a
checksum of the up to SUM_BYTES bytes just before the position) is keyed by (path,
fingerprint), not by the hostname, and saved in the same transaction as the records its
lines produced. So after a crash at any moment, or in a container started anew under
another hostname, ingestion resumes exactly where the last commit left off; and two
hosts that share one database and tail files at the same path never share a checkpoint.

At each poll the file at the path is opened, and:

- its fingerprint has a checkpoint and the bytes before the position still have their
  checksum: the file was appended to; it is read on from the position;
- its fingerprint has a checkpoint, but the file is shorter than the position or the
  checksum differs: it was rewritten in place; it is read again from its start;
- its fingerprint is new at the path (a first file, a new file after a rotation, a file
  truncated and refilled with another first line): first the rest of each file that left
  the path for another name in the same folder is read (found by the device and inode of
  its checkpoint, proved by its fingerprint), then the new file from its start. While
  the path is missing, or its new file has no complete line yet, the renamed file may
  still grow and is read on; once the new file has a line, the old one is finished.

Reading a file again from its start costs only duplicates: records are stored
idempotently. A checkpoint moves on only from where its writer found it, so of two
processes tailing one file at once (containers overlapping on a volume) the later one's
transaction is rolled back (CheckpointMoved) instead of counting lines twice. A path that
is missing or unreadable is logged once when that starts and once when it ends; its
state is kept in the database for /health.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

from config import Settings

from .. import observe, times
from ..db import Database
from ..records import jsonl
from ..records.validate import TimeWindow
from ..store.ingest import prepare_all, store_all
from ..store.jobs import (
    Checkpoint,
    PathState,
    adopt_legacy,
    load_checkpoint,
    load_path_state,
    save_checkpoint,
    save_path_state,
    unfinished_checkpoints,
)

log = logging.getLogger(__name__)
HEAD_BYTES = 1024  # the fingerprint covers the first line, or this much of a longer one
SUM_BYTES = 64  # the checksum covers this much before the read position
OK, MISSING, UNREADABLE = "ok", "missing", "unreadable"


def fingerprint(fd: int) -> str | None:
    """sha256 of the file's head: its first line, or its first HEAD_BYTES when that line is longer.

    None while the first line is incomplete and shorter: there is nothing to read yet.
    """
    head = os.pread(fd, HEAD_BYTES, 0)
    end = head.find(b"\n") + 1
    if end == 0 and len(head) < HEAD_BYTES:
        return None
    return hashlib.sha256(head[: end or HEAD_BYTES]).hexdigest()


def position_sum(fd: int, position: int) -> str | None:
    """Checksum of the up to SUM_BYTES bytes just before `position` (None at the start)."""
    if position == 0:
        return None
    start = max(position - SUM_BYTES, 0)
    return hashlib.sha256(os.pread(fd, position - start, start)).hexdigest()


def _rewritten(fd: int, checkpoint: Checkpoint) -> bool:
    """Whether the bytes the checkpoint was read up to are no longer what they were.

    A checkpoint from before migration 0005 has no checksum: only the length tells.
    """
    if os.fstat(fd).st_size < checkpoint.position:
        return True
    return checkpoint.position_sum is not None and position_sum(fd, checkpoint.position) != checkpoint.position_sum


def _renamed(path: Path, checkpoints: list[Checkpoint]) -> Iterator[tuple[Path, Checkpoint]]:
    """Files of `path`'s folder, under another name, with the device and inode of a checkpoint.

    Only a hint: the caller proves the file by its fingerprint before it reads it.
    """
    wanted: dict[tuple[int, int], list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        wanted.setdefault((checkpoint.device, checkpoint.inode), []).append(checkpoint)
    try:
        entries = list(os.scandir(path.parent)) if wanted else []
    except OSError:
        return
    for entry in entries:
        if entry.path == str(path):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        for checkpoint in wanted.get((stat.st_dev, stat.st_ino), []):
            yield Path(entry.path), checkpoint


class Tailer:
    """Ingests one JSONL file; `poll()` consumes every complete line not yet stored."""

    def __init__(self, db: Database, path: str | Path, host: str, settings: Settings | None = None) -> None:
        self.db = db
        self.settings = settings  # for the times records may carry; None: any
        self.path = Path(path).absolute()
        self.key = str(self.path)
        self.host = host  # whose state of the path this is (/health); and its checkpoints from before 0005
        self.deadline: float | None = None
        self.more = False

    def poll(self, deadline: float | None = None) -> int:
        """Ingest what is new; returns the number of lines consumed.

        With a `deadline` (time.monotonic()), stops between chunks once it has passed,
        leaving `self.more` set so the caller can come back at once.
        """
        self.deadline, self.more = deadline, False
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            return self._absent(error)
        with handle:
            try:
                head = fingerprint(handle.fileno())
            except OSError as error:
                return self._absent(error)
            return self._present(handle, head)

    def _absent(self, error: OSError) -> int:
        """The path cannot be read: read the rest of a file renamed away from it; note its state."""
        state = MISSING if isinstance(error, FileNotFoundError) else UNREADABLE
        consumed = self._follow(None)
        with self.db.reading() as conn:
            known = load_path_state(conn, self.host, self.key)
        self._note(known, state, None, error.strerror)
        return consumed

    def _present(self, handle: IO[bytes], head: str | None) -> int:
        """Read the file at the path on from its checkpoint, or, new here, after the files it replaced."""
        with self.db.reading() as conn:
            known = load_path_state(conn, self.host, self.key)
            checkpoint = None if head is None else load_checkpoint(conn, self.key, head)
        consumed = 0
        if checkpoint is None:
            consumed = self._follow(head)
            if self.more or head is None:
                self._note(known, OK, head)
                return consumed
            checkpoint = self._start(handle.fileno(), head, known)
        checkpoint = self._resume(handle.fileno(), checkpoint, self.path)
        more, _ = self._consume(handle, checkpoint, finished=False)
        self._note(known, OK, head)
        return consumed + more

    def _follow(self, head: str | None) -> int:
        """Read the rest of each file that left the path for another name in its folder.

        Called while the path holds no file with a checkpoint: nothing, or a new file
        (`head`, None while its first line is incomplete). Only once the new file has a
        complete line has the writer surely moved to it: then the old file's last line is
        taken even without its newline, and the old file is marked finished.
        """
        with self.db.reading() as conn:
            candidates = unfinished_checkpoints(conn, self.key, other_than=head)
        consumed = 0
        for found, checkpoint in _renamed(self.path, candidates):
            consumed += self._finish(found, checkpoint, finished=head is not None)
            if self.more:
                break
        return consumed

    def _finish(self, found: Path, checkpoint: Checkpoint, finished: bool) -> int:
        """Read on in a file rotated away from the path to `found`; mark it finished if it is."""
        try:
            handle = open(found, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return 0
        with handle:
            if fingerprint(handle.fileno()) != checkpoint.fingerprint:
                return 0  # another file has that device and inode now (or another host's checkpoint)
            checkpoint = self._resume(handle.fileno(), checkpoint, found)
            consumed, checkpoint = self._consume(handle, checkpoint, finished)
        if finished and not self.more:
            log.info("%s: read to its end after its rotation to %s", self.path, found.name)
            self._save(replace(checkpoint, finished_at=times.now_micros()), checkpoint)
        return consumed

    def _start(self, fd: int, head: str, known: PathState | None) -> Checkpoint:
        """The checkpoint of a file new at the path: this host's from before migration 0005
        when it is about the same file (device and inode), else a new one at its start."""
        stat = os.fstat(fd)
        with self.db.writing() as conn:
            checkpoint = adopt_legacy(conn, self.host, self.key, head, stat.st_dev, stat.st_ino)
            if checkpoint is None:
                checkpoint = Checkpoint(head, stat.st_dev, stat.st_ino)
                save_checkpoint(conn, self.host, self.key, checkpoint, previous=None)
        if known is not None and known.fingerprint not in (None, head):
            log.info("%s: a new file (rotated, or truncated and refilled); reading it from its start", self.path)
        return checkpoint

    def _resume(self, fd: int, checkpoint: Checkpoint, name: Path) -> Checkpoint:
        """The checkpoint to read on from: from the start if the file was rewritten in place;
        with the device and inode it has now (another container may see another device)."""
        stat = os.fstat(fd)
        fixed = replace(checkpoint, device=stat.st_dev, inode=stat.st_ino, finished_at=None)
        if _rewritten(fd, checkpoint):
            log.warning("%s: rewritten in place (truncated and refilled?); reading it again from its start", name)
            fixed = replace(fixed, position=0, position_sum=None, line=0)
        return checkpoint if fixed == checkpoint else self._save(fixed, checkpoint)

    def _consume(self, handle: IO[bytes], checkpoint: Checkpoint, finished: bool) -> tuple[int, Checkpoint]:
        """Read complete lines from the checkpoint on, one transaction per chunk.

        `finished`: the file will not grow any more (it was rotated away), so a last
        line without a newline is taken as it is.
        """
        consumed, fd = 0, handle.fileno()
        handle.seek(checkpoint.position)
        window = TimeWindow.from_settings(self.settings) if self.settings is not None else None
        for lines in jsonl.read_lines(handle, checkpoint.line, finished, window):
            consumed += lines.last - checkpoint.line
            checkpoint = self._store(lines, checkpoint, fd)
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.more = True
                return consumed, checkpoint
        behind = max(os.fstat(fd).st_size - checkpoint.position, 0)
        if behind != checkpoint.bytes_behind:  # a partial line came or went
            checkpoint = self._save(replace(checkpoint, bytes_behind=behind), checkpoint)
        return consumed, checkpoint

    def _store(self, lines: jsonl.Lines, checkpoint: Checkpoint, fd: int) -> Checkpoint:
        """Store the records of `lines` and the new position together."""
        for line, reason in lines.rejected:
            log.warning("%s:%d: rejected: %s", self.path, line, reason)
        batch, events = prepare_all(lines.records, lines.events)
        received = times.now_micros() * 1000
        position = checkpoint.position + lines.size
        moved = replace(
            checkpoint,
            position=position,
            position_sum=position_sum(fd, position),
            line=lines.last,
            lines_read=checkpoint.lines_read + lines.read,
            lines_rejected=checkpoint.lines_rejected + len(lines.rejected),
            bytes_behind=max(os.fstat(fd).st_size - position, 0),
        )
        with self.db.writing() as conn:
            stored = store_all(conn, batch, events, received)
            if stored.refused:
                first = next(iter(stored.refused.values()))
                log.warning("%s: %d records refused: %s", self.path, len(stored.refused), first)
            new = replace(
                moved,
                records_stored=checkpoint.records_stored + stored.stored,
                duplicates=checkpoint.duplicates + stored.duplicates,
            )
            save_checkpoint(conn, self.host, self.key, new, previous=checkpoint)
        observe.lines_ingested("file", lines, stored, self.key)
        return new

    def _save(self, checkpoint: Checkpoint, previous: Checkpoint) -> Checkpoint:
        with self.db.writing() as conn:
            save_checkpoint(conn, self.host, self.key, checkpoint, previous)
        return checkpoint

    def _note(self, known: PathState | None, state: str, head: str | None, reason: str | None = None) -> None:
        """Keep the path's state for /health; log once when it goes missing or unreadable, once when it is back."""
        was = known.state if known is not None else OK
        since = known.since if known is not None and was == state else times.now_micros()
        last_read = head if head is not None or known is None else known.fingerprint
        now = PathState(state, since, last_read)
        if now == known:
            return
        if state != was and state == OK and known is not None:
            log.info("%s: readable again, after being %s since %s", self.path, was, times.to_iso(known.since))
        elif state != was:
            log.warning("%s: %s (%s); checking again at each poll", self.path, state, reason)
        with self.db.writing() as conn:
            save_path_state(conn, self.host, self.key, now)
