"""Operator commands: `python -m gpumetrics import FILE...`, `purge` and `migrate`.

A plain click group, not Flask's: `--help` and `--version` need no settings and touch no
database, and the list shows only these commands. Each command reads the settings and
opens the database itself, with the service's start-up checks (startup.py), so a bad
setting or an unusable database is one line and a non-zero exit here too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError

from config import Settings

from . import __version__, observe, startup, times
from .db import Database
from .jobs import retention
from .records import jsonl
from .records.validate import TimeWindow
from .store.ingest import prepare_all, store_all

CHUNK_BYTES = 1 << 20


@click.group(help="gpumetrics operator commands; they read the same settings as the service.")
@click.version_option(__version__, prog_name="gpumetrics", message="%(prog)s %(version)s")
def main() -> None:
    pass


@contextmanager
def _database() -> Iterator[tuple[Settings, Database, str]]:
    """The settings, the database (checked, waited for, schema current) and what was done to it."""
    with startup.one_line():
        settings = startup.load_settings()
        startup.configure_logging(settings)
        done = startup.prepare(settings)
    db = Database(settings.database_url)
    try:
        yield settings, db, done
    except OperationalError as error:
        sys.exit(f"gpumetrics: {startup.database_problem(settings, error)}")
    finally:
        db.dispose()


def _import_file(db: Database, settings: Settings, path: Path) -> tuple[int, int, int, list[tuple[int, str]]]:
    """Backfill one JSONL file through the ingest pipeline; one transaction per chunk."""
    lines_read = stored = duplicates = 0
    rejected: list[tuple[int, str]] = []
    window = TimeWindow.from_settings(settings)
    with (
        path.open("rb") as handle,
        click.progressbar(length=path.stat().st_size, label=path.name, file=sys.stderr) as bar,
    ):
        for lines in jsonl.read_lines(handle, 0, finished=True, window=window, chunk_bytes=CHUNK_BYTES):
            outcome = None
            if lines.records or lines.events:
                batch, events = prepare_all(lines.records, lines.events)
                with db.writing() as conn:
                    outcome = store_all(conn, batch, events, times.now_micros() * 1000)
                stored, duplicates = stored + outcome.stored, duplicates + outcome.duplicates
                rejected += [(lines.last, f"a record refused: {why}") for why in set(outcome.refused.values())]
            observe.lines_ingested("import", lines, outcome)
            lines_read += lines.read
            rejected += lines.rejected
            bar.update(lines.size)
    return lines_read, stored, duplicates, rejected


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(files: tuple[Path, ...]) -> None:
    """Backfill JSONL files (one record or array per line) into the database."""
    any_rejected = False
    with _database() as (settings, db, _):
        for path in files:
            lines_read, stored, duplicates, rejected = _import_file(db, settings, path)
            click.echo(
                f"{path}: {lines_read} lines, {stored} stored, {duplicates} duplicates, {len(rejected)} rejected"
            )
            for line, reason in rejected:
                first, *more = str(reason).splitlines() or [""]
                click.echo(f"  line {line}: {first}")
                for text in more:
                    click.echo(f"    {text}")
            any_rejected = any_rejected or bool(rejected)
    sys.exit(1 if any_rejected else 0)


@main.command("purge")
def purge_command() -> None:
    """Run retention now: delete records older than METRICS_RETENTION_HOURS."""
    with _database() as (settings, db, _):
        hours = settings.metrics_retention_hours
        if hours is None:
            click.echo("retention is off (METRICS_RETENTION_HOURS=0): nothing deleted")
            return
        deleted = retention.purge(db, hours, settings.rollup_retention_days)
    click.echo(f"deleted {deleted} records older than {hours:g} hours")


@main.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (the service also does this at start)."""
    with _database() as (_, db, done):
        click.echo(done)
