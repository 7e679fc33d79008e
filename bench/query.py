"""Query benchmark: the read endpoints over HTTP on a 10-million-record SQLite file.

    .venv/bin/python bench/query.py [--data bench/data/query.db] [--rebuild] [--repeat 20]

1. Builds (or reuses) a SQLite file with the service's schema (made the way the
   service makes it: its migrations, see _common.create_schema) and 8 GPUs (gpuIndex
   0..7, no host) x 6 kinds x one record per second: 208,334 seconds, 10,000,032
   records. Built directly with sqlite3 executemany (the records indexes dropped
   during the load and re-created from their own DDL afterwards). A sidecar
   `<data>.json` records what was built; the file is rebuilt when the DDL of the gpus
   or records tables or the parameters change. bench/data/ is git-ignored.
2. Starts the real gunicorn service on that file (2 workers, random free port) and
   times each query over HTTP, round-robin with `GET /health` (the baseline: a request
   that does no real work), `--repeat` rounds after a warm-up; medians are reported,
   also as multiples of the /health median.
3. Checks the answers: the averages against sqlite3 over the same rows, the counts,
   the pages' order.
4. For every query that misses its target, runs it in-process, captures the SQL the
   service sent, and prints each statement's time and EXPLAIN QUERY PLAN.

Figures are printed; this is not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from _common import (
    ROOT,
    Server,
    admin_dsn,
    bulk_sqlite,
    cached,
    create_schema,
    get_json,
    load_records,
    median,
    print_machine,
)

import config
from gpumetrics import times
from gpumetrics.kinds import COLUMNS, KINDS

FORMAT = 1  # bump when the generated data changes
GPUS = 8
KIND_ORDER = list(KINDS)
BASE_US = times.parse_iso("2025-01-01T00:00:00Z")
DEFAULT_RECORDS = 10_000_000
RECORD_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)


# ---- the data -----------------------------------------------------------------------------


def schema_sql() -> list[str]:
    """The DDL of the gpus and records tables and their indexes, as the service makes it.

    Other tables (job state and the like) do not make the data stale.
    """
    with tempfile.TemporaryDirectory(prefix="gpumetrics-schema-") as tmp:
        create_schema(f"sqlite:///{tmp}/schema.db")
        conn = sqlite3.connect(f"{tmp}/schema.db")
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ('gpus', 'records') ORDER BY name"
        ).fetchall()
        conn.close()
    return [row[0] for row in rows]


def utilization(second: int, gpu: int) -> tuple[float, float]:
    """(gpuPercent, memoryPercent) of one GPU at one second: varied, deterministic."""
    return float((second * 7 + gpu * 13) % 101), float((second * 3 + gpu * 5) % 101)


def generate(seconds: int):
    """Every record row, in time order (as ingest would store them): 48 per second."""
    column = {name: i for i, name in enumerate(RECORD_COLUMNS)}
    width = len(RECORD_COLUMNS)
    blank = [None] * width

    def row(gpu_id, metric, ts, **values):
        out = blank.copy()
        out[0], out[1], out[2] = gpu_id, metric, ts
        for name, value in values.items():
            out[column[name]] = value
        return tuple(out)

    for second in range(seconds):
        ts = BASE_US + second * 1_000_000
        for gpu in range(GPUS):
            gpu_id = gpu + 1
            used = float((second * 37 + gpu * 1000) % 40960)
            gpu_percent, memory_percent = utilization(second, gpu)
            yield row(gpu_id, "memory", ts, total_mib=40960.0, used_mib=used, free_mib=40960.0 - used)
            yield row(gpu_id, "utilization", ts, gpu_percent=gpu_percent, memory_percent=memory_percent)
            yield row(gpu_id, "temperature", ts, celsius=float(40 + (second + gpu) % 45))
            yield row(gpu_id, "power", ts, watts=100.0 + ((second * 11 + gpu) % 3000) / 10)
            yield row(gpu_id, "clocks", ts, graphics_mhz=1410.0, memory_mhz=1215.0, sm_mhz=1410.0)
            yield row(gpu_id, "process", ts, pid=4000 + gpu, used_mib=2048.0 + second % 512, process_name="python")


def build(path: Path, seconds: int) -> None:
    last = BASE_US + (seconds - 1) * 1_000_000
    with bulk_sqlite(path) as conn:
        conn.executemany(
            "INSERT INTO gpus (id, host, gpu_index, uuid, name, first_seen, last_seen) VALUES (?, '', ?, ?, ?, ?, ?)",
            [(g + 1, g, f"GPU-bench-{g:04d}", "NVIDIA A100-SXM4-40GB", BASE_US, last) for g in range(GPUS)],
        )
        load_records(conn, generate(seconds), seconds * GPUS * len(KIND_ORDER))


def ensure_data(path: Path, records: int, rebuild: bool) -> dict:
    seconds = math.ceil(records / (GPUS * len(KIND_ORDER)))
    total = seconds * GPUS * len(KIND_ORDER)
    wanted = {"format": FORMAT, "seconds": seconds, "gpus": GPUS, "base_us": BASE_US, "schema": schema_sql()}
    began = time.perf_counter()

    def make() -> None:
        print(f"building {path}: {GPUS} GPUs x {len(KIND_ORDER)} kinds x {seconds:,} s = {total:,} records ...")
        build(path, seconds)

    if cached(path, wanted, make, rebuild):
        print(f"reusing {path} ({total:,} records)")
    else:
        size = path.stat().st_size / 2**30
        print(f"  built in {time.perf_counter() - began:.0f} s, {size:.2f} GiB", flush=True)
    return wanted


# ---- the queries --------------------------------------------------------------------------


@dataclass
class Query:
    name: str
    path: str
    target_ms: float | None
    times: list[float]


def url(path: str, **params) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}" if params else path


class Direct:
    """The database itself, bypassing the service: sqlite3 (read-only) or psycopg. `?` placeholders."""

    def __init__(self, database_url: str) -> None:
        self.postgres = not database_url.startswith("sqlite")
        if self.postgres:
            import psycopg

            self.conn = psycopg.connect(admin_dsn(database_url), autocommit=True)
        else:
            self.conn = sqlite3.connect(f"file:{database_url.split('///', 1)[1]}?mode=ro", uri=True)
            self.conn.execute("PRAGMA cache_size = -65536")

    def execute(self, sql: str, parameters=()):
        if self.postgres and isinstance(parameters, tuple | list):
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, parameters)

    def close(self) -> None:
        self.conn.close()


def check_answers(conn, database_url: str, data: dict, hour_start: int, first: int, last: int, queries: dict) -> None:
    """Compare each answer with the database itself over the same rows; raise on any difference."""
    direct = Direct(database_url)
    who = "PostgreSQL" if direct.postgres else "sqlite3"

    def direct_avg(start: int, end: int) -> tuple[float, int]:
        return direct.execute(
            "SELECT avg(gpu_percent), count(gpu_percent) FROM records "
            "WHERE gpu_id = (SELECT id FROM gpus WHERE host = '' AND gpu_index = 3) "
            "AND metric = 'utilization' AND ts BETWEEN ? AND ?",
            (start, end),
        ).fetchone()

    seconds = data["seconds"]
    print(f"checking the answers against {who} ...", flush=True)
    hour = (last - hour_start) // 1_000_000 + 1  # 3,600 unless the data is shorter
    for key, start, expected_count in (("avg 1 h", hour_start, hour), ("avg all", first, seconds)):
        answer = get_json(conn, queries[key].path)
        value, count = direct_avg(start, last)
        assert count == expected_count, (key, count)
        assert answer["count"] == count, (key, answer, count)
        assert math.isclose(answer["value"], value, rel_tol=1e-9), (key, answer, value)
        print(f"  {key}: avg gpuPercent {answer['value']:.6f} over {count:,} records = {who} {value:.6f}")

    stats = get_json(conn, queries["stats 1 h"].path)["gpus"]
    assert [gpu["gpuIndex"] for gpu in stats] == [3], stats
    metrics = stats[0]["metrics"]
    assert sorted(metrics) == sorted(KIND_ORDER), sorted(metrics)
    assert all(m["count"] == hour for m in metrics.values()), {k: m["count"] for k, m in metrics.items()}
    hour_avg, _ = direct_avg(hour_start, last)
    stats_avg = metrics["utilization"]["fields"]["gpuPercent"]["avg"]
    assert math.isclose(stats_avg, hour_avg, rel_tol=1e-9), (stats_avg, hour_avg)
    assert metrics["utilization"]["fields"]["gpuPercent"]["last"] == utilization(seconds - 1, 3)[0]
    print(f"  stats 1 h: 6 kinds x {hour:,} records, gpuPercent avg {stats_avg:.6f} = {who}, last value right")

    page = get_json(conn, queries["page"].path)
    items = page["items"]
    assert len(items) == 1000 and page["next"], len(items)
    stamps = [times.parse_iso(item["timestamp"]) for item in items]
    assert stamps == sorted(stamps) and stamps[0] == first, stamps[:3]
    print(f"  page: 1,000 records from {items[0]['timestamp']}, in order, with a next cursor")

    page = get_json(conn, queries["page gpu 3 power"].path)
    items = page["items"]
    assert len(items) == 1000 and page["next"], len(items)
    assert all(item["metric"] == "power" and item["gpuIndex"] == 3 for item in items)
    stamps = [times.parse_iso(item["timestamp"]) for item in items]
    assert stamps == [first + i * 1_000_000 for i in range(1000)], stamps[:3]
    print("  page gpu 3 power: the first 1,000 seconds of GPU 3's power, in order")
    direct.close()


def explain(database_url: str, query: Query) -> None:
    """Run the query in-process, capture the SQL the service sent; time and EXPLAIN each statement."""
    from sqlalchemy import event

    from gpumetrics import create_app

    settings = config.load({"DATABASE_URL": database_url, "METRICS_RETENTION_HOURS": "0", "LOG_LEVEL": "WARNING"})
    app = create_app(settings)
    database = app.extensions["gpumetrics"]["db"]
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "COMMIT", "ROLLBACK", "SELECT 1")):
            sent.append((statement, parameters if isinstance(parameters, dict) else tuple(parameters or ())))

    event.listen(database.engine, "before_cursor_execute", capture)
    started = time.perf_counter()
    answer = app.test_client().get(query.path)
    took = time.perf_counter() - started
    event.remove(database.engine, "before_cursor_execute", capture)
    database.dispose()
    print(f"\n### {query.name}: GET {query.path}")
    print(f"in-process: {took * 1000:.1f} ms, status {answer.status_code}; {len(sent)} statements:")
    direct = Direct(database_url)
    for statement, parameters in sent:
        spent = []
        for _ in range(3):
            began = time.perf_counter()
            direct.execute(statement, parameters).fetchall()
            spent.append(time.perf_counter() - began)
        who = "PostgreSQL" if direct.postgres else "sqlite3"
        print(f"\n  -- {min(spent) * 1000:.1f} ms (best of 3, {who}), parameters {parameters}")
        print("  " + " ".join(statement.split()))
        if direct.postgres:
            for (line,) in direct.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).fetchall():
                print(f"    plan: {line}")
            continue
        depth = {0: 0}
        for node, parent, _, detail in direct.execute(f"EXPLAIN QUERY PLAN {statement}", parameters):
            depth[node] = depth.get(parent, 0) + 1
            print(f"    plan: {'  ' * depth[node]}{detail}")
    direct.close()


# ---- PostgreSQL data ----------------------------------------------------------------------


def _copy_line(row: tuple) -> str:
    return "\t".join("\\N" if value is None else str(value) for value in row)


def ensure_postgres(server_url: str, name: str, records: int, rebuild: bool) -> tuple[dict, str]:
    """The same rows in a PostgreSQL database `name` on the server of `server_url` (COPY).

    Reused when it holds exactly what would be built (a bench_build table records it).
    Returns (what was built, the database's SQLAlchemy URL).
    """
    import psycopg
    from sqlalchemy.engine import make_url

    seconds = math.ceil(records / (GPUS * len(KIND_ORDER)))
    wanted = {"format": FORMAT, "seconds": seconds, "gpus": GPUS, "base_us": BASE_US}
    database_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    admin = admin_dsn(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    if exists and not rebuild:
        try:
            with psycopg.connect(admin_dsn(database_url)) as conn:
                have = conn.execute("SELECT built FROM bench_build").fetchone()
            if have and json.loads(have[0]) == wanted:
                print(f"reusing PostgreSQL database {name} ({seconds * GPUS * len(KIND_ORDER):,} records)")
                return wanted, database_url
        except psycopg.Error:
            pass
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    total = seconds * GPUS * len(KIND_ORDER)
    print(f"building PostgreSQL database {name}: {total:,} records (COPY) ...", flush=True)
    began = time.perf_counter()
    create_schema(database_url)  # as the service makes it (migrations)
    with psycopg.connect(admin_dsn(database_url)) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'records' AND indexname <> 'pk_records'"
        ).fetchall()
        for index, _ in indexes:
            conn.execute(f'DROP INDEX "{index}"')
        last = BASE_US + (seconds - 1) * 1_000_000
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO gpus (id, host, gpu_index, uuid, name, first_seen, last_seen) "
                "VALUES (%s, '', %s, %s, %s, %s, %s)",
                [(g + 1, g, f"GPU-bench-{g:04d}", "NVIDIA A100-SXM4-40GB", BASE_US, last) for g in range(GPUS)],
            )
        conn.execute("SELECT setval(pg_get_serial_sequence('gpus', 'id'), %s)", (GPUS,))
        conn.commit()
        columns = ", ".join(RECORD_COLUMNS)
        rows = generate(seconds)
        done = 0
        loading = time.perf_counter()
        while done < total:
            part = [_copy_line(row) for _, row in zip(range(500_000), rows, strict=False)]
            with conn.cursor() as cur, cur.copy(f"COPY records ({columns}) FROM STDIN") as copy:
                copy.write("\n".join(part) + "\n")
            conn.commit()
            done += len(part)
            if done % 2_000_000 < 500_000 or done == total:
                rate = done / (time.perf_counter() - loading)
                print(f"  {done:>12,} / {total:,} records ({rate:,.0f}/s)", flush=True)
        for index, ddl in indexes:
            step = time.perf_counter()
            conn.execute(ddl)
            conn.commit()
            print(f"  index {index}: {time.perf_counter() - step:.1f} s", flush=True)
        conn.execute("CREATE TABLE bench_build (built text NOT NULL)")
        conn.execute("INSERT INTO bench_build VALUES (%s)", (json.dumps(wanted),))
        conn.commit()
        conn.autocommit = True
        step = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  VACUUM ANALYZE: {time.perf_counter() - step:.1f} s", flush=True)
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**30
    print(f"  built in {time.perf_counter() - began:.0f} s, {size:.2f} GiB", flush=True)
    return wanted, database_url


def drop_postgres(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data" / "query.db", help="the SQLite file")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records to build (default 10000000)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the file even if it is current")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds per query (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn WORKERS (default 2)")
    parser.add_argument("--explain-all", action="store_true", help="print plans of every query, not just slow ones")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL: the same rows are COPYed into a database of ours there (see --pg-database)",
    )
    parser.add_argument(
        "--pg-database", default="gpumetrics_bench_query", help="its name (default gpumetrics_bench_query)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="PostgreSQL: keep the database for the next run (default: drop it)"
    )
    args = parser.parse_args()

    print_machine()
    postgres = args.database_url is not None and not args.database_url.startswith("sqlite")
    if postgres:
        data, database_url = ensure_postgres(args.database_url, args.pg_database, args.records, args.rebuild)
    else:
        data = ensure_data(args.data.resolve(), args.records, args.rebuild)
        database_url = f"sqlite:///{args.data.resolve()}"
    try:
        run(args, data, database_url)
    finally:
        if postgres and not args.keep:
            drop_postgres(args.database_url, args.pg_database)
            print(f"dropped PostgreSQL database {args.pg_database}")


def run(args, data: dict, database_url: str) -> None:
    seconds = data["seconds"]
    first = BASE_US
    last = BASE_US + (seconds - 1) * 1_000_000
    hour_start = max(first, last - 3599 * 1_000_000)  # the last hour: 3,600 samples of each series
    iso = times.to_iso
    avg = {"aggregate": "avg", "field": "gpuPercent", "metric": "utilization", "gpuIndex": 3}
    queries = {
        q.name: q
        for q in (
            Query("health", "/health", None, []),
            Query("avg 1 h", url("/metrics", **avg, start=iso(hour_start), end=iso(last)), 20, []),
            Query("avg all", url("/metrics", **avg, start=iso(first), end=iso(last)), 1000, []),
            Query("stats 1 h", url("/stats", gpuIndex=3, start=iso(hour_start)), 100, []),
            Query("page", "/metrics", 30, []),
            Query("page gpu 3 power", url("/metrics", gpuIndex=3, metric="power"), 30, []),
        )
    }

    log_dir = Path(tempfile.mkdtemp(prefix="gpumetrics-query-"))
    env = {
        "DATABASE_URL": database_url,
        "WORKERS": str(args.workers),
        "METRICS_RETENTION_HOURS": "0",  # the data is old on purpose: keep it
        "ENABLE_WS_FILE": "false",
        "ENABLE_MSG_FILE": "false",
    }
    print(f"service: gunicorn WORKERS={args.workers} on {database_url.split('@')[-1]} ...", flush=True)
    with Server(env, log_dir) as server:
        conn = server.connection()
        check_answers(conn, database_url, data, hour_start, first, last, queries)
        print(f"timing: {args.warmup} warm-up + {args.repeat} timed rounds, round-robin ...", flush=True)
        for round_number in range(args.warmup + args.repeat):
            for query in queries.values():
                began = time.perf_counter()
                get_json(conn, query.path)
                took = time.perf_counter() - began
                if round_number >= args.warmup:
                    query.times.append(took)
        conn.close()

    health = median(queries["health"].times)
    print(f"\n## Query result (median of {args.repeat}; /health median {health * 1000:.2f} ms is the baseline)")
    print(f"  {'query':<18} {'median':>10} {'min':>10} {'max':>10} {'x /health':>10} {'target':>8}  verdict")
    slow = []
    for query in queries.values():
        mid = median(query.times)
        verdict = ""
        if query.target_ms is not None:
            met = mid * 1000 <= query.target_ms
            verdict = "MET" if met else "MISSED"
            if not met:
                slow.append(query)
        target = f"{query.target_ms:.0f} ms" if query.target_ms else ""
        print(
            f"  {query.name:<18} {mid * 1000:>7.1f} ms {min(query.times) * 1000:>7.1f} ms "
            f"{max(query.times) * 1000:>7.1f} ms {mid / health:>9.1f}x {target:>8}  {verdict}"
        )
    spread = statistics.pstdev(queries["health"].times) / health
    print(f"  (/health spread: stdev {spread:.0%} of its median)")
    for query in queries.values() if args.explain_all else slow:
        if query.target_ms is not None:
            explain(database_url, query)
    shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
