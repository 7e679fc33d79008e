"""The fleet now: the SQL behind GET /metrics/latest over 1,000 GPUs, against the issue's 10 ms; and the request.

    .venv/bin/python bench/latest.py [--hosts 125] [--gpus 8] [--samples 5] [--repeat 30] [--database-url URL]

Why: issue 12 wants the newest values of a 1,000-GPU fleet in 10 ms of SQL, which is
what the `latest` table (a copy of each GPU's newest record per kind, kept current by
every write) is for. This loads a synthetic fleet (125 hosts x 8 GPUs, every kind, a few
samples a GPU, ending a second ago) through the service's own write path (validate,
prepare, store_records: bench/common.py's load_records), so `latest` is built exactly as
in production. It then captures the one statement `store.latest.read(conn, Filters())`
runs, times the database's own work on it (`SELECT count(*) FROM (statement)`: run to its
last row, none shipped to Python) against 10 ms, and the statement with every row fetched
(in an open reading connection; median of --repeat), whose rows cost Python more than the
database, and prints its plan (SQLite: EXPLAIN QUERY
PLAN; PostgreSQL: EXPLAIN ANALYZE) to show which indexes it uses. Its same-run partner is
the floor of the same rows: `SELECT * FROM latest` (no join, no order), timed
round-robin with it. The whole of latest.read (the SQL and the rows turned into the API's
records) is timed too, and GET /metrics/latest through the real gunicorn against GET
/health in the same run. On PostgreSQL the scratch database is VACUUM ANALYZEd after the
load (what autovacuum does within a minute of it) and dropped after the run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
import compare

from gpumetrics import times
from gpumetrics.db import Database
from gpumetrics.store import latest
from gpumetrics.store.queries import Filters

TARGET_MS = 10.0
FLOOR = "SELECT * FROM latest"


def parse_args():
    parser = common.arguments(__doc__)
    parser.add_argument("--hosts", type=int, default=125, help="hosts (125)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per host (8)")
    parser.add_argument("--samples", type=int, default=5, help="seconds of samples per GPU, every kind each (5)")
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds (30), after 2 untimed")
    return parser.parse_args()


def fleet(hosts: int, gpus: int, samples: int) -> Iterator[dict[str, Any]]:
    """Every kind of every GPU, one record a second for `samples` seconds ending a second ago; host by host."""
    start = (times.now_micros() // common.SECOND - samples) * common.SECOND
    per_host = gpus * len(common.KIND_NAMES) * samples
    for host in range(hosts):
        yield from common.items(per_host, start, host=f"node-{host:03d}", gpus=gpus)


def captured(db: Database) -> tuple[str, Any, int]:
    """The statement latest.read runs for the whole fleet, its parameters, and how many records it answers."""
    with db.reading() as conn, compare.statements(db) as ran:
        answered = len(latest.read(conn, Filters()))
    if len(ran) != 1:
        raise SystemExit(f"latest.read ran {len(ran)} SELECTs, not one: {ran}")
    return *ran[0], answered


def time_sql(db: Database, statement: str, parameters: Any, repeat: int) -> dict[str, list[float]]:
    """Seconds of the statement, of its floor and of the whole latest.read, round-robin in one open connection."""
    spent: dict[str, list[float]] = {"engine": [], "sql": [], "floor": [], "read": []}
    # The database's own work: the statement run to its last row, none of them shipped to Python.
    counted = f"SELECT count(*) FROM ({statement}) AS answer"
    with db.reading() as conn:
        for number in range(2 + repeat):
            for name in spent:
                began = time.perf_counter()
                if name == "read":
                    latest.read(conn, Filters())
                else:
                    asked = {"engine": (counted, parameters), "sql": (statement, parameters), "floor": (FLOOR, ())}
                    conn.exec_driver_sql(*asked[name]).fetchall()
                if number >= 2:
                    spent[name].append(time.perf_counter() - began)
    return spent


def time_http(url: str, folder: Path, expected: int, repeat: int) -> dict[str, list[float]]:
    """GET /metrics/latest and GET /health through the real gunicorn, round-robin, after 2 untimed rounds."""
    spent: dict[str, list[float]] = {"/metrics/latest": [], "/health": []}
    with common.service({"DATABASE_URL": url}, folder) as server:
        client = compare.Client(server)
        items = client.get("/metrics/latest")[1]["items"]
        if len(items) != expected:
            raise SystemExit(f"GET /metrics/latest answered {len(items)} records, not {expected}")
        for number in range(2 + repeat):
            for path in spent:
                took = client.get(path)[0]
                if number >= 2:
                    spent[path].append(took)
    return spent


def report(sql: dict[str, list[float]], http: dict[str, list[float]], rows: int) -> None:
    """One row per figure: its median, the target and the ratio, its same-run partner and that ratio."""
    median = {name: statistics.median(values) for name, values in {**sql, **http}.items()}
    engine_ms = median["engine"] * 1000
    verdict = "met" if engine_ms <= TARGET_MS else "**missed**"
    partner = f"`{FLOOR}` {common.ms(median['floor'])}"
    table = [
        ["its SQL in the database (count(*) of it)", common.ms(median["engine"]), f"{TARGET_MS:g} ms"]
        + [f"{engine_ms / TARGET_MS:.2f}×", partner, f"{median['engine'] / median['floor']:.2f}×", verdict],
        ["SQL of latest.read, every row fetched", common.ms(median["sql"]), "", ""]
        + [partner, f"{median['sql'] / median['floor']:.2f}×", ""],
        ["latest.read (SQL + records)", common.ms(median["read"]), "", ""]
        + [partner, f"{median['read'] / median['floor']:.2f}×", ""],
        ["GET /metrics/latest, HTTP", common.ms(median["/metrics/latest"]), "", ""]
        + [f"GET /health {common.ms(median['/health'])}", f"{median['/metrics/latest'] / median['/health']:.2f}×", ""],
    ]
    print(f"\n{rows:,} records answered; medians of {len(sql['sql'])} rounds, each figure round-robin with its partner")
    common.table(["figure", "median", "target", "× target", "same-run partner", "× partner", ""], table)


def main() -> None:
    args = parse_args()
    common.header("bench/latest.py")
    total = args.hosts * args.gpus * len(common.KIND_NAMES) * args.samples
    with (
        tempfile.TemporaryDirectory(prefix="gpumetrics-latest-") as tmp,
        common.fresh_database(args.database_url, Path(tmp), "latest") as url,
    ):
        print(f"loading {args.hosts * args.gpus:,} GPUs: {total:,} records through the write path", flush=True)
        common.load_records(url, fleet(args.hosts, args.gpus, args.samples), total)
        if common.is_postgres(url):
            with compare.postgres(url) as conn:
                conn.execute("VACUUM ANALYZE")
        db = Database(url)
        try:
            statement, parameters, rows = captured(db)
            print(f"\nthe statement: {' '.join(statement.split())}\nparameters: {parameters}\nplan:")
            print("\n".join(f"  {line}" for line in compare.plan(db, statement, parameters)))
            sql = time_sql(db, statement, parameters, args.repeat)
        finally:
            db.dispose()
        http = time_http(url, Path(tmp), rows, args.repeat)
    report(sql, http, rows)


if __name__ == "__main__":
    main()
