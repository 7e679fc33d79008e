"""Operator commands: `python -m gpumetrics import FILE...`, `purge` and `migrate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask

from .jobs import retention
from .records import jsonl
from .state import get_db, get_settings
from .store.write import prepare, store_records

CHUNK_BYTES = 1 << 20


def _import_file(path: Path) -> tuple[int, int, int, list[tuple[int, str]]]:
    """Backfill one JSONL file through the ingest pipeline; one transaction per chunk."""
    lines_read = stored = duplicates = 0
    rejected: list[tuple[int, str]] = []
    db = get_db()
    with (
        path.open("rb") as handle,
        click.progressbar(length=path.stat().st_size, label=path.name, file=sys.stderr) as bar,
    ):
        for lines in jsonl.read_lines(handle, 0, finished=True, chunk_bytes=CHUNK_BYTES):
            if lines.records:
                batch = prepare(lines.records)
                with db.writing() as session:
                    outcome = store_records(session, batch)
                stored, duplicates = stored + outcome.stored, duplicates + outcome.duplicates
            lines_read += lines.read
            rejected += lines.rejected
            bar.update(lines.size)
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
    hours = get_settings().metrics_retention_hours
    if hours is None:
        click.echo("retention is off (METRICS_RETENTION_HOURS=0): nothing deleted")
        return
    deleted = retention.purge(get_db(), hours)
    click.echo(f"deleted {deleted} records older than {hours:g} hours")


@click.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (the service also does this at start)."""
    db = get_db()
    db.upgrade()
    click.echo(f"database schema at revision {db.revision()}")


def register(app: Flask) -> None:
    app.cli.add_command(import_command)
    app.cli.add_command(purge_command)
    app.cli.add_command(migrate_command)
