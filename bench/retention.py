"""Retention benchmark: purging 5 million expired rows while a client keeps POSTing.

    .venv/bin/python bench/retention.py [--old 5000000] [--database-url URL]

Issue: "Measure and record how long purging 5 million rows takes and the worst POST
latency meanwhile."

1. Builds (once; cached in bench/data/, git-ignored) a SQLite file with the service's
   schema (its migrations) and `--old` records from 2025 (8 GPUs x 6 kinds x one per
   second), far older than the retention window. Each run copies it, then adds
   `--young` records of the last hour on GPUs 0..6 (GPU 7 has only old records, so
   retention must forget it). With --database-url (PostgreSQL) the same rows are
   COPYed into a database of our own on that server (created and dropped here).
2. Starts the real gunicorn (2 workers) with METRICS_RETENTION_HOURS=24 and
   RETENTION_CLEAN_INTERVAL_SEC=86400: retention runs once, at start.
3. A client POSTs `--post-batch` fresh records every `--post-interval` seconds from the
   moment the service answers; /health is polled until jobs.retention.lastRun appears.
   The purge's duration is lastRun's finishedAt - startedAt (the service's clock); the
   POSTs sent within it are "during". The client keeps POSTing `--baseline-sec` more
   seconds: the baseline.
4. Checks: lastRun says exactly `--old` rows deleted and one GPU forgotten; no record
   older than the cutoff is left; every young record and every POSTed one is there.

`--compare-statements N` (PostgreSQL) times store.purge's DELETE against the proposed
`= ANY(ARRAY(...))` form instead, and `--experiment NAME=VALUE` runs bench/experiment.py
(a proposed change on trial) instead of wsgi:app. Figures are printed; this is not a test.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from _common import (
    ROOT,
    CpuMeter,
    PostClient,
    ScratchPostgres,
    Server,
    admin_dsn,
    bulk_sqlite,
    cached,
    cores_text,
    create_schema,
    health_jobs,
    latency_text,
    load_records,
    median,
    percentile,
    print_machine,
)

from gpumetrics import times
from gpumetrics.jobs.retention import BATCH_ROWS, PAUSE_SEC
from gpumetrics.kinds import COLUMNS

FORMAT = 1  # bump when the generated data changes
GPUS = 8
KINDS = ("memory", "utilization", "temperature", "power", "clocks", "process")
PER_SECOND = GPUS * len(KINDS)
OLD_BASE_US = times.parse_iso("2025-01-01T00:00:00Z")
RETENTION_HOURS = 24
RECORD_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)


# ---- the data -----------------------------------------------------------------------------


def rows(count: int, base_us: int, gpu_ids: list[int]):
    """`count` record rows from `base_us` on: each GPU of `gpu_ids` x six kinds per second."""
    column = {name: i for i, name in enumerate(RECORD_COLUMNS)}
    blank = [None] * len(RECORD_COLUMNS)
    per_second = len(gpu_ids) * len(KINDS)
    for i in range(count):
        second, rest = divmod(i, per_second)
        slot, k = divmod(rest, len(KINDS))
        kind = KINDS[k]
        row = blank.copy()
        row[0], row[1], row[2] = gpu_ids[slot], kind, base_us + second * 1_000_000
        if kind == "memory":
            row[column["total_mib"]], row[column["used_mib"]] = 40960.0, float(i % 40960)
        elif kind == "utilization":
            row[column["gpu_percent"]], row[column["memory_percent"]] = float(i % 101), float(i * 7 % 101)
        elif kind == "temperature":
            row[column["celsius"]] = float(40 + i % 45)
        elif kind == "power":
            row[column["watts"]] = 100.0 + (i % 1000) / 10
        elif kind == "clocks":
            row[column["graphics_mhz"]], row[column["memory_mhz"]] = 1410.0, 1215.0
        else:
            row[column["pid"]], row[column["used_mib"]] = 4000 + slot, float(2048 + i % 512)
        yield tuple(row)


def schema_sql() -> list[str]:
    from query import schema_sql as query_schema_sql

    return query_schema_sql()


def build_sqlite(path: Path, old: int) -> None:
    """The pristine file: schema by migrations, 8 GPUs, `old` records from 2025."""
    last = OLD_BASE_US + (old // PER_SECOND) * 1_000_000
    with bulk_sqlite(path) as conn:
        ids = [
            conn.execute(
                "INSERT INTO gpus (host, gpu_index, first_seen, last_seen) VALUES ('', ?, ?, ?)", (g, OLD_BASE_US, last)
            ).lastrowid
            for g in range(GPUS)
        ]
        load_records(conn, rows(old, OLD_BASE_US, ids), old)


def ensure_sqlite(path: Path, old: int) -> None:
    wanted = {"format": FORMAT, "old": old, "base_us": OLD_BASE_US, "schema": schema_sql()}
    began = time.perf_counter()

    def make() -> None:
        print(f"building {path.relative_to(ROOT)}: {old:,} old records ...", flush=True)
        build_sqlite(path, old)

    if cached(path, wanted, make):
        print(f"reusing {path.relative_to(ROOT)} ({old:,} old records, {path.stat().st_size / 2**20:.0f} MiB)")
    else:
        print(f"  built in {time.perf_counter() - began:.0f} s, {path.stat().st_size / 2**20:.0f} MiB", flush=True)


def add_young_sqlite(path: Path, young: int, base_us: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    ids = [row[0] for row in conn.execute("SELECT id FROM gpus WHERE host = '' ORDER BY gpu_index")][: GPUS - 1]
    sql = f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
    conn.execute("BEGIN")
    conn.executemany(sql, rows(young, base_us, ids))
    conn.execute(f"UPDATE gpus SET last_seen = ? WHERE id IN ({','.join('?' * len(ids))})", (times.now_micros(), *ids))
    conn.execute("COMMIT")
    conn.close()


def _copy_text(row: tuple) -> str:
    return "\t".join("\\N" if value is None else str(value) for value in row)


def copy_rows(conn, generator, count: int, chunk: int = 200_000) -> None:
    columns = ", ".join(RECORD_COLUMNS)
    with conn.cursor() as cur, cur.copy(f"COPY records ({columns}) FROM STDIN") as copy:
        done = 0
        while done < count:
            part = [_copy_text(row) for _, row in zip(range(chunk), generator, strict=False)]
            if not part:
                break
            copy.write("\n".join(part) + "\n")
            done += len(part)


def build_postgres(url: str, old: int, young: int, young_base: int) -> None:
    """The same rows in a fresh PostgreSQL database: migrations, COPY without the records indexes."""
    import psycopg

    create_schema(url)
    with psycopg.connect(admin_dsn(url)) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'records' AND indexname <> 'pk_records'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        last = OLD_BASE_US + (old // PER_SECOND) * 1_000_000
        ids = [
            conn.execute(
                "INSERT INTO gpus (host, gpu_index, first_seen, last_seen) VALUES ('', %s, %s, %s) RETURNING id",
                (g, OLD_BASE_US, last if g == GPUS - 1 else young_base),
            ).fetchone()[0]
            for g in range(GPUS)
        ]
        began = time.perf_counter()
        copy_rows(conn, rows(old, OLD_BASE_US, ids), old)
        copy_rows(conn, rows(young, young_base, ids[: GPUS - 1]), young)
        conn.commit()
        print(f"  COPY of {old + young:,} rows: {time.perf_counter() - began:.0f} s", flush=True)
        for name, ddl in indexes:
            began = time.perf_counter()
            conn.execute(ddl)
            conn.commit()
            print(f"  index {name}: {time.perf_counter() - began:.1f} s", flush=True)
        conn.autocommit = True
        began = time.perf_counter()
        conn.execute("VACUUM ANALYZE records")
        conn.execute("ANALYZE gpus")
        print(f"  VACUUM ANALYZE: {time.perf_counter() - began:.1f} s", flush=True)


# ---- checks -------------------------------------------------------------------------------


def query_one(url: str, sql: str, params: tuple = ()) -> tuple:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        try:
            return conn.execute(sql.replace("%s", "?"), params).fetchone()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(admin_dsn(url)) as conn:
        return conn.execute(sql, params).fetchone()


# ---- the purge statement alone ---------------------------------------------------------------

PROPOSED_PURGE = (
    "DELETE FROM records WHERE id = ANY(ARRAY("
    "SELECT id FROM records WHERE ts < %(cutoff)s ORDER BY ts LIMIT %(batch)s))"
)


def compare_statements(url: str, batches: int) -> None:
    """PostgreSQL: store.purge's statement against PROPOSED_PURGE, alternating batch by batch."""
    from sqlalchemy import event

    from gpumetrics import store
    from gpumetrics.db import Database

    cutoff = times.now_micros() - RETENTION_HOURS * 3600 * 1_000_000
    db = Database(url)
    sent: list[tuple[str, dict]] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: sent.append((args[2], args[3])))
    names = ("store.purge (the service)", "proposed = ANY(ARRAY(...))")
    spent: dict[str, list[float]] = {name: [] for name in names}
    plans: dict[str, list[str]] = {}
    for number in range(batches):
        name = names[number % 2]
        proposed = (PROPOSED_PURGE, {"cutoff": cutoff, "batch": BATCH_ROWS})
        with db.writing() as session:
            began = time.perf_counter()
            if name == names[0]:
                gone = store.purge(session, cutoff, BATCH_ROWS)
            else:
                gone = session.connection().exec_driver_sql(*proposed).rowcount
            spent[name].append(time.perf_counter() - began)
        assert gone == BATCH_ROWS, gone
        if name not in plans:
            deletes = [item for item in sent if item[0].lstrip().upper().startswith("DELETE")]
            statement, parameters = deletes[-1] if name == names[0] else proposed
            with db.engine.connect() as conn:
                plans[name] = [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)]
                plans[name].insert(0, " ".join(statement.split()))
    db.dispose()
    print(f"\n## One purge batch of {BATCH_ROWS:,} rows, alternating ({batches} batches in all)")
    for name, values in spent.items():
        print(f"  {name:<28} median {median(values) * 1e3:7.1f} ms, max {max(values) * 1e3:7.1f} ms")
        for line in plans[name][:6]:
            print(f"      {line}")


# ---- the run ------------------------------------------------------------------------------


def wait_retention(server: Server, timeout: float, every: float = 0.2) -> dict:
    conn = server.connection(timeout=60)
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            last = health_jobs(server, conn)["retention"]["lastRun"]
            if last:
                return last
            time.sleep(every)
    finally:
        conn.close()
    raise SystemExit(f"retention did not finish within {timeout:.0f} s")


def run_service(args, url: str, tmp: Path) -> dict:
    env = {
        "DATABASE_URL": url,
        "WORKERS": str(args.workers),
        "METRICS_RETENTION_HOURS": str(RETENTION_HOURS),
        "RETENTION_CLEAN_INTERVAL_SEC": "86400",
        "ENABLE_WS_FILE": "false",
        "ENABLE_MSG_FILE": "false",
        **{f"BENCH_{item.partition('=')[0].upper()}": item.partition("=")[2] for item in args.experiment},
    }
    app = "bench.experiment:app" if args.experiment else "wsgi:app"
    if args.experiment:
        print(f"  experiment: bench/experiment.py with {', '.join(args.experiment)}")
    print(f"service: gunicorn WORKERS={args.workers}, retention {RETENTION_HOURS} h, {url.split('@')[-1]} ...")
    started = time.time()
    with Server(env, tmp, app=app) as server:
        ready = time.time()
        client = PostClient(server, batch=args.post_batch, interval=args.post_interval, reconnect=True)
        client.start()
        meter = CpuMeter(server).start()
        last = wait_retention(server, args.timeout)
        cpu = meter.stop()
        seen = time.time()
        time.sleep(args.baseline_sec)
        client.stop()
        runner = health_jobs(server)["runners"].get("retention")
    began = times.parse_iso(last["startedAt"]) / 1e6
    ended = times.parse_iso(last["finishedAt"]) / 1e6
    return {
        "last": last,
        "runner": runner,
        "duration": ended - began,
        "start_delay": began - started,
        "ready_delay": ready - started,
        "seen_delay": seen - ended,
        "during": client.latencies(began, ended, wall=True),
        "worst": sorted(
            (
                (took, wall - began, wall + took - ended)
                for _, wall, took, _ in client.samples
                if began <= wall <= ended
            ),
            reverse=True,
        )[:3],
        "after": client.latencies(begin=seen, wall=True),
        "posted": client.stored,
        "failures": client.failures,
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=int, default=5_000_000, help="expired records (default 5000000)")
    parser.add_argument("--young", type=int, default=50_400, help="records within the window (default 50400)")
    parser.add_argument("--post-batch", type=int, default=100, help="records per POST (default 100)")
    parser.add_argument("--post-interval", type=float, default=0.05, help="seconds between POSTs (default 0.05)")
    parser.add_argument("--baseline-sec", type=float, default=15.0, help="baseline after the purge (default 15)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn WORKERS (default 2)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds (1800)")
    parser.add_argument("--database-url", help="a PostgreSQL server URL; a database of our own is made there")
    parser.add_argument(
        "--compare-statements",
        type=int,
        metavar="BATCHES",
        help="PostgreSQL: instead of starting the service, time store.purge's DELETE against the proposed "
        "= ANY(ARRAY(...)) form, alternating, for BATCHES batches",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run bench/experiment.py's app with BENCH_NAME=VALUE (a proposed change on trial); repeatable",
    )
    args = parser.parse_args()

    print_machine()
    now_us = times.now_micros()
    young_base = now_us - 3600 * 1_000_000  # the last hour: well within the 24 h window
    postgres = args.database_url is not None and not args.database_url.startswith("sqlite")
    tmp = Path(tempfile.mkdtemp(prefix="gpumetrics-retention-"))
    scratch = None
    try:
        if postgres:
            scratch = ScratchPostgres(args.database_url, "retention").__enter__()
            url = scratch.url
            print(f"loading {args.old:,} old + {args.young:,} young records into {scratch.name} ...", flush=True)
            build_postgres(url, args.old, args.young, young_base)
            if args.compare_statements:
                compare_statements(url, args.compare_statements)
                return
        else:
            pristine = ROOT / "bench" / "data" / f"retention-{args.old}.db"
            ensure_sqlite(pristine, args.old)
            path = tmp / "service.db"
            began = time.perf_counter()
            shutil.copyfile(pristine, path)
            add_young_sqlite(path, args.young, young_base)
            print(f"copied it and added {args.young:,} young records in {time.perf_counter() - began:.1f} s")
            url = f"sqlite:///{path}"
        result = run_service(args, url, tmp)
        last = result["last"]
        cutoff = times.parse_iso(last["cutoff"])
        left_old = query_one(url, "SELECT count(*) FROM records WHERE ts < %s", (cutoff,))[0]
        young_left = query_one(
            url,
            "SELECT count(*) FROM records JOIN gpus ON gpus.id = records.gpu_id WHERE gpus.host = '' AND ts >= %s",
            (young_base,),
        )[0]
        posted_left = query_one(
            url, "SELECT count(*) FROM records JOIN gpus ON gpus.id = records.gpu_id WHERE gpus.host <> ''"
        )[0]
        gpus_left = query_one(url, "SELECT count(*) FROM gpus WHERE host = ''")[0]
    finally:
        if scratch is not None:
            scratch.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)

    kind = "PostgreSQL" if postgres else "SQLite"
    during, after = result["during"], result["after"]
    p99_during, p99_after = percentile(during, 0.99), percentile(after, 0.99)
    rate = last["deleted"] / result["duration"]
    pauses = last["batches"] * PAUSE_SEC
    print(f"\n## Retention result ({kind}, {args.old:,} expired + {args.young:,} young records)")
    print(f"  lastRun: {last}; run by {result['runner']}")
    print(
        f"  the service answered {result['ready_delay']:.1f} s after its start; the purge began "
        f"{result['start_delay']:.1f} s after its start; /health showed its end {result['seen_delay']:.1f} s late"
    )
    print(
        f"  purge: {last['deleted']:,} rows in {result['duration']:.1f} s = {rate:,.0f} rows/s, "
        f"{last['batches']} batches of {BATCH_ROWS:,} ({result['duration'] / last['batches'] * 1e3:.0f} ms per batch, "
        f"of which {PAUSE_SEC * 1e3:.0f} ms pause; pauses {pauses:.1f} s in all)"
    )
    print(f"    CPU from the first POST to the end: {cores_text(result['cpu'])}")
    print(f"  POST latency during the purge:          {latency_text(during)}")
    print(f"  POST latency after it (baseline):       {latency_text(after)}")
    for took, since_start, to_end in result["worst"]:
        print(
            f"    a slowest POST: {took * 1e3:,.0f} ms, sent {since_start:.1f} s after the purge began, "
            f"answered {to_end:+.1f} s from its end"
        )
    print(
        f"  during / baseline: p50 {percentile(during, 0.5) / percentile(after, 0.5):.1f} x, p99 "
        f"{p99_during / p99_after:.1f} x, max {max(during) / max(after):.1f} x"
        if during and after
        else "  (no POST fell within the purge: use a larger --old)"
    )
    checks = [
        (f"deleted == {args.old:,}", last["deleted"] == args.old),
        (f"records older than the cutoff left: {left_old}", left_old == 0),
        (f"young records left: {young_left:,} of {args.young:,}", young_left == args.young),
        (f"POSTed records stored: {posted_left:,} of {result['posted']:,}", posted_left == result["posted"]),
        (
            f"GPUs forgotten: {last['gpusForgotten']} (expected 1); local GPUs left {gpus_left}",
            last["gpusForgotten"] == 1 and gpus_left == GPUS - 1,
        ),
        (f"failed POSTs: {len(result['failures'])}", not result["failures"]),
    ]
    for text, ok in checks:
        print(f"  check: {text:<60} {'ok' if ok else 'FAILED'}")
    if result["failures"]:
        print(f"  e.g. {result['failures'][:3]}")


if __name__ == "__main__":
    main()
