"""Operator commands: `python -m gpumetrics import FILE...` and `python -m gpumetrics purge`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask

from . import current_db, current_settings, ingest, store
from .jobs import retention

CHUNK_BYTES = 1 << 20


def _import_file(path: Path) -> tuple[int, int, int, list[tuple[int, str]]]:
    """Backfill one JSONL file through the ingest pipeline; one transaction per chunk."""
    lines_read = stored = duplicates = line = 0
    rejected: list[tuple[int, str]] = []
    leftover = b""
    db = current_db()
    with (
        path.open("rb") as handle,
        click.progressbar(length=path.stat().st_size, label=path.name, file=sys.stderr) as bar,
    ):
        while True:
            chunk = handle.read(CHUNK_BYTES)
            data = leftover + chunk
            end = len(data) if not chunk else data.rfind(b"\n") + 1
            leftover = data[end:]
            decoded = ingest.decode_lines(data[:end], line)
            prepared = store.prepare(decoded.records)
            with db.writing() as session:
                new, dup = store.insert(session, prepared)
            line, lines_read = decoded.last, lines_read + decoded.read
            stored, duplicates = stored + new, duplicates + dup
            rejected += decoded.rejected
            bar.update(len(chunk))
            if not chunk:
                break
    return lines_read, stored, duplicates, rejected


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(files: tuple[Path, ...]) -> None:
    """Backfill JSONL files (one record or array per line) into the database."""
    any_rejected = False
    for path in files:
        lines_read, stored, duplicates, rejected = _import_file(path)
        click.echo(f"{path}: {lines_read} lines, {stored} stored, {duplicates} duplicates, {len(rejected)} rejected")
        for line, reason in rejected:
            click.echo(f"  line {line}: {reason}")
        any_rejected = any_rejected or bool(rejected)
    sys.exit(1 if any_rejected else 0)


@click.command("purge")
def purge_command() -> None:
    """Run retention now: delete records older than METRICS_RETENTION_HOURS."""
    hours = current_settings().metrics_retention_hours
    if hours <= 0:
        click.echo("retention is off (METRICS_RETENTION_HOURS=0): nothing deleted")
        return
    deleted = retention.purge(current_db(), hours)
    click.echo(f"deleted {deleted} records older than {hours:g} hours")


@click.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (the service also does this at start)."""
    db = current_db()
    db.upgrade()
    click.echo(f"database schema at revision {db.revision()}")


def register(app: Flask) -> None:
    app.cli.add_command(import_command)
    app.cli.add_command(purge_command)
    app.cli.add_command(migrate_command)
