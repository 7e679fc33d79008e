"""Everything the filters name, as NDJSON or CSV, a page at a time.

Each page is read in a short transaction of its own and handed on at once, so an export
of ten million records holds neither the records in memory nor a read transaction
open for minutes (which on SQLite would keep the write-ahead log from being recycled).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from ..db import Database
from ..kinds import FIELD_KINDS
from . import queries

PAGE = 5000
CSV_COLUMNS = ("timestamp", "host", "gpuIndex", "uuid", "name", "metric", *FIELD_KINDS)


def pages(db: Database, filters: queries.Filters) -> Iterator[list[dict[str, Any]]]:
    """Every record of the filters in time order, a page per read transaction."""
    cursor = None
    while True:
        with db.reading() as conn:
            items, cursor = queries.page(conn, filters, PAGE, "asc", cursor)
        if items:
            yield items
        if cursor is None:
            return


def ndjson(db: Database, filters: queries.Filters) -> Iterator[str]:
    for items in pages(db, filters):
        yield "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items)


def csv_text(db: Database, filters: queries.Filters) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    yield buffer.getvalue()
    for items in pages(db, filters):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(items)
        yield buffer.getvalue()
