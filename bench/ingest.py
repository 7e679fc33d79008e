"""Ingest benchmark: records per second through the real service, against raw sqlite3.

    .venv/bin/python bench/ingest.py [--records 300000] [--database-url URL] [--no-profile]

1. Starts the real gunicorn service (the command of `make serve`: 2 workers, gthread)
   on a fresh SQLite file in a temp dir and a random free port. Two client threads,
   one keep-alive connection each, POST pre-serialized batches of 1000 valid records
   (all six kinds, unique timestamps: no duplicates) as fast as the service answers.
2. In the same run, inserts the same rows with the standard library's sqlite3
   `executemany` (one transaction per 1000-row batch, the pragmas of gpumetrics/db.py)
   into a fresh file with the same schema (made as the service makes it): the baseline. Run before and after the
   service so that a noisy neighbour shows up as a spread between the two.
3. Profiles the app in-process (Flask test client, same batches) with cProfile, and
   times each phase of a POST without the profiler.

Targets (from the issue): >= 40,000 records/s through the service, and >= 25 % of the
raw sqlite3 rate; on PostgreSQL (--database-url) >= 30,000 records/s.
Figures are printed; this is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    ScratchPostgres,
    Server,
    create_schema,
    insert_frames,
    machine_cpu,
    median,
    print_machine,
    spy_label,
    sqlite_pragmas,
    worker_cpu,
)
from gpumetrics.models import metadata

import config
from gpumetrics import times
from gpumetrics.kinds import COLUMNS, KINDS

TARGET_RATE = 40_000
TARGET_RATE_POSTGRESQL = 30_000  # the target through the service on PostgreSQL
TARGET_RATIO = 0.25
KIND_ORDER = list(KINDS)  # memory, utilization, temperature, power, clocks, process
GPUS = 8
PER_SECOND = GPUS * len(KIND_ORDER)
RECORD_COLUMNS = ("gpu_id", "metric", "ts", *COLUMNS)


# ---- the records ------------------------------------------------------------------


def fields_of(kind: str, i: int, gpu: int) -> dict:
    """Valid field values of one record (shapes as in tests/samples.py), varying with i."""
    if kind == "memory":
        used = (i * 37) % 40960
        return {"totalMiB": 40960, "usedMiB": used, "freeMiB": 40960 - used}
    if kind == "utilization":
        return {"gpuPercent": i % 101, "memoryPercent": (i * 7) % 101}
    if kind == "temperature":
        return {"celsius": 40 + i % 45}
    if kind == "power":
        return {"watts": 100 + (i % 1000) / 10}
    if kind == "clocks":
        return {"graphicsMHz": 1410, "memoryMHz": 1215}
    return {"pid": 1000 + gpu, "usedMiB": 2048 + i % 512}


def make_records(count: int, base_us: int) -> list[dict]:
    """`count` records: 8 GPUs x 6 kinds per second, one second apart; all distinct."""
    out = []
    for i in range(count):
        second, rest = divmod(i, PER_SECOND)
        gpu, k = divmod(rest, len(KIND_ORDER))
        kind = KIND_ORDER[k]
        ts = base_us + second * 1_000_000
        out.append({"timestamp": times.to_iso(ts), "gpuIndex": gpu, "metric": kind, **fields_of(kind, i, gpu)})
    return out


def canonical_row(record: dict, gpu_ids: dict[int, int]) -> tuple:
    """The row store.insert makes of a record: gpu_id, metric, ts and every column."""
    values = dict.fromkeys(COLUMNS)
    for field in KINDS[record["metric"]].fields:
        value = record.get(field.name)
        if value is not None and field.type == "number":
            value = float(value)  # StrictNumber loads as float
        values[field.column] = value
    return (gpu_ids[record["gpuIndex"]], record["metric"], times.parse_iso(record["timestamp"]), *values.values())


def batches_of(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---- raw baseline -------------------------------------------------------------------


class RawSqlite:
    """A fresh file with the service's schema, written with plain sqlite3 like db.py would."""

    def __init__(self, path: Path, records: list[dict]) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        create_schema(f"sqlite:///{path}")  # as the service makes it
        self.conn = sqlite3.connect(path, isolation_level=None)
        sqlite_pragmas(self.conn)
        first = times.parse_iso(records[0]["timestamp"])
        last = times.parse_iso(records[-1]["timestamp"])
        self.gpu_ids = {}
        for gpu in range(GPUS):
            cur = self.conn.execute(
                "INSERT INTO gpus (host, gpu_index, first_seen, last_seen) VALUES ('', ?, ?, ?)", (gpu, first, last)
            )
            self.gpu_ids[gpu] = cur.lastrowid
        self.sql = (
            f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))}) "
            "ON CONFLICT DO NOTHING"
        )

    def rows(self, records: list[dict]) -> list[tuple]:
        return [canonical_row(r, self.gpu_ids) for r in records]

    def insert(self, rows: list[tuple]) -> int:
        """One transaction, as the service makes per POST."""
        self.conn.execute("BEGIN IMMEDIATE")
        stored = self.conn.executemany(self.sql, rows).rowcount
        self.conn.execute("COMMIT")
        return stored

    def close(self) -> None:
        self.conn.close()


def raw_sqlite(path: Path, records: list[dict], batch: int) -> float:
    """Records/s of sqlite3 executemany, one transaction per batch, into a fresh file."""
    raw = RawSqlite(path, records)
    chunks = batches_of(raw.rows(records), batch)
    start = time.perf_counter()
    stored = sum(raw.insert(chunk) for chunk in chunks)
    elapsed = time.perf_counter() - start
    raw.close()
    assert stored == len(records), (stored, len(records))
    return len(records) / elapsed


def raw_postgresql(url: str, records: list[dict], batch: int) -> float:
    """Records/s of psycopg executemany into the same schema, in a scratch PG schema."""
    import psycopg
    from sqlalchemy.engine import make_url

    scratch = f"bench_raw_{random.randrange(16**8):08x}"
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {scratch}")
    try:
        from sqlalchemy import create_engine

        engine = create_engine(url)
        with engine.begin() as conn:
            metadata.create_all(conn.execution_options(schema_translate_map={None: scratch}))
        engine.dispose()
        with psycopg.connect(conninfo) as conn:
            conn.execute(f"SET search_path TO {scratch}")
            first = times.parse_iso(records[0]["timestamp"])
            last = times.parse_iso(records[-1]["timestamp"])
            gpu_ids = {}
            for gpu in range(GPUS):
                row = conn.execute(
                    "INSERT INTO gpus (host, gpu_index, first_seen, last_seen) VALUES ('', %s, %s, %s) RETURNING id",
                    (gpu, first, last),
                ).fetchone()
                gpu_ids[gpu] = row[0]
            conn.commit()
            rows = [canonical_row(r, gpu_ids) for r in records]
            sql = (
                f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(RECORD_COLUMNS))}) ON CONFLICT DO NOTHING"
            )
            start = time.perf_counter()
            with conn.cursor() as cur:
                for chunk in batches_of(rows, batch):
                    cur.executemany(sql, chunk)
                    conn.commit()
            elapsed = time.perf_counter() - start
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {scratch} CASCADE")
    return len(records) / elapsed


# ---- through the service ----------------------------------------------------------------


def through_service(
    server: Server, bodies: list[bytes], batch: int, clients: int, warmup: int, reconnect: bool
) -> dict:
    """POST every body from `clients` threads; the first `warmup` per client untimed.

    With `reconnect`, every POST opens a new connection (so the kernel hands it to
    whichever worker accepts first); otherwise each client keeps one keep-alive
    connection, which stays with the worker that accepted it.
    """
    lock = threading.Lock()
    warm = iter(bodies[: warmup * clients])
    timed = iter(bodies[warmup * clients :])
    timed_count = len(bodies) - warmup * clients
    barrier = threading.Barrier(clients + 1)
    latencies: list[float] = []
    problems: list[str] = []
    stored = [0]
    headers = {"Content-Type": "application/json"}
    if reconnect:
        headers["Connection"] = "close"

    def post(conn, body: bytes) -> float:
        start = time.perf_counter()
        if reconnect:
            conn = server.connection()
        conn.request("POST", "/metrics", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        took = time.perf_counter() - start
        if reconnect:
            conn.close()
        result = json.loads(answer) if response.status in (201, 422) else {}
        if response.status != 201 or result.get("stored") != batch:
            problems.append(f"{response.status} {answer[:300]!r}")
        with lock:
            stored[0] += result.get("stored", 0)
        return took

    def client() -> None:
        conn = server.connection()
        try:
            for _ in range(warmup):
                with lock:
                    body = next(warm)
                post(conn, body)
            barrier.wait()
            while True:
                with lock:
                    body = next(timed, None)
                if body is None:
                    break
                took = post(conn, body)
                with lock:
                    latencies.append(took)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    cpu_before, machine_before, client_before = worker_cpu(server), machine_cpu(), time.process_time()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu_after, machine_after, client_after = worker_cpu(server), machine_cpu(), time.process_time()
    busy, total = (after - before for after, before in zip(machine_after, machine_before, strict=True))
    cores = os.cpu_count() or 1
    workers = sorted(((cpu_after[p] - cpu_before.get(p, 0)) / elapsed for p in cpu_after), reverse=True)
    return {
        "rate": timed_count * batch / elapsed,
        "elapsed": elapsed,
        "timed_records": timed_count * batch,
        "latency_median": median(latencies),
        "latency_max": max(latencies),
        "stored": stored[0],
        "problems": problems,
        "worker_cores": workers,
        "client_cores": (client_after - client_before) / elapsed,
        "machine_cores": busy / total * cores if total else float("nan"),
    }


# ---- profile ------------------------------------------------------------------------


def _find(stats: pstats.Stats, file_end: str, name: str, column: int = 3) -> float:
    """Cumulative (column 3) or total (column 2) time of the functions named so."""
    return sum(
        value[column]
        for (file, _line, func), value in stats.stats.items()  # type: ignore[attr-defined]
        if func == name and file.replace("\\", "/").endswith(file_end)
    )


def profile(records: list[dict], batch: int, posts: int, top: int, phase_batches: int = 20) -> None:
    """cProfile the in-process app over `posts` POSTs, then time each phase unprofiled."""
    from gpumetrics import create_app, ingest, store

    with tempfile.TemporaryDirectory(prefix="gpumetrics-profile-") as tmp:
        settings = config.load({"DATABASE_URL": f"sqlite:///{tmp}/profile.db", "LOG_LEVEL": "WARNING"})
        app = create_app(settings)
        client = app.test_client()
        db = app.extensions["gpumetrics"]["db"]
        batches = batches_of(records, batch)
        bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches]
        need = 2 + posts + 2 * phase_batches
        if len(bodies) < need:
            raise SystemExit(f"profile needs {need} batches; raise --records")
        feed = iter(bodies)

        def post(body: bytes) -> None:
            answer = client.post("/metrics", data=body, content_type="application/json")
            assert answer.status_code == 201 and answer.get_json()["stored"] == batch, answer.get_data()[:300]

        # The benchmark's own 100k+ live objects would slow every gen-2 collection of
        # the in-process app; a gunicorn worker holds no such heap.
        gc.collect()
        gc.freeze()
        for _ in range(2):
            post(next(feed))
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(posts):
            post(next(feed))
        profiler.disable()

        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        total = stats.total_tt  # type: ignore[attr-defined]
        n = posts * batch
        print(f"\n## cProfile: {posts} POSTs of {batch} records in-process (Flask test client)")
        print(f"profiled time {total:.2f} s = {total / n * 1e6:.1f} us/record (cProfile inflates Python-heavy code)")
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        text = out.getvalue()
        # Drop pstats's per-run header lines; keep the tables.
        print("\n".join(line for line in text.splitlines() if line.strip() and "function calls" not in line))

        parse = _find(stats, "gpumetrics/api/metrics.py", "_parse_body")
        loads = _find(stats, "json/__init__.py", "loads")
        validate = _find(stats, "gpumetrics/ingest.py", "validate")
        fast = _find(stats, "gpumetrics/fastpath.py", "accept")
        schema_loads = sum(
            value[1]
            for (file, _line, func), value in stats.stats.items()  # type: ignore[attr-defined]
            if func == "load" and file.replace("\\", "/").endswith("marshmallow/schema.py")
        )
        insert = _find(stats, "gpumetrics/store.py", "insert")
        prepare = _find(stats, "gpumetrics/store.py", "prepare")
        resolve = _find(stats, "gpumetrics/store.py", "resolve_gpus")
        build = _find(stats, "gpumetrics/store.py", "insert", 2) + sum(
            value[2]
            for (file, _line, func), value in stats.stats.items()  # type: ignore[attr-defined]
            if func == "<dictcomp>"
            and file.endswith("gpumetrics/store.py")
            and any(caller[2] == "insert" for caller in value[4])
        )
        executemany = _find(stats, "~", "<method 'executemany' of 'sqlite3.Cursor' objects>", 2)
        writing = _find(stats, "gpumetrics/api/metrics.py", "post")
        print("\n## cProfile breakdown (share of profiled time, us/record under the profiler)")
        parts = [
            ("JSON parse (_parse_body, of which json.loads)", parse, f" [json.loads {loads / total:.1%}]"),
            (
                "validation (ingest.validate)",
                validate,
                f" [fastpath accept {fast / total:.1%}; marshmallow Schema.load called {schema_loads:,} times]",
            ),
            ("store.prepare: building rows, before the transaction", prepare, ""),
            ("store.insert: filling in GPU ids (own time)", build, ""),
            ("store.insert: resolve_gpus (select + 8 updates)", resolve, ""),
            ("store.insert: SQLAlchemy executemany overhead", insert - resolve - build - executemany, ""),
            ("store.insert: sqlite3 executemany itself (C)", executemany, ""),
            ("session/transaction (begin, commit) outside insert", writing - parse - validate - prepare - insert, ""),
            ("Flask, werkzeug, flask-smorest, test client", total - writing, ""),
        ]
        for label, seconds, extra in parts:
            print(f"  {label:<54} {seconds / total:6.1%}  {seconds / n * 1e6:7.2f} us{extra}")

        # The same phases unprofiled, interleaved batch by batch so that a noisy
        # neighbour hits them alike; the median batch of each, per record.
        raw = RawSqlite(Path(tmp) / "raw.db", records)
        phases: dict[str, list[float]] = {
            name: [] for name in ("post", "loads", "validate", "prepare", "insert", "raw")
        }

        def clock(name, fn, *args):
            start = time.perf_counter()
            result = fn(*args)
            phases[name].append((time.perf_counter() - start) / batch * 1e6)
            return result

        def write(prepared):
            with db.writing() as session:
                store.insert(session, prepared)

        position = 2 + posts
        for _ in range(phase_batches):
            body, body_records = bodies[position], batches[position]
            items = clock("loads", json.loads, body)
            checked = clock("validate", ingest.validate, items)
            prepared = clock("prepare", store.prepare, checked.records)
            clock("insert", write, prepared)
            clock("raw", raw.insert, raw.rows(body_records))
            clock("post", post, bodies[position + 1])
            position += 2
        raw.close()
        db.dispose()
        gc.unfreeze()

    t = {name: median(values) for name, values in phases.items()}
    print(f"\n## Unprofiled phases of one POST (median of {phase_batches} batches; us/record, one core, in-process)")
    print(f"  full POST through the Flask test client    {t['post']:7.2f} us  100%")
    for label, value in [
        ("json.loads of the body", t["loads"]),
        ("ingest.validate", t["validate"]),
        ("store.prepare (before the transaction)", t["prepare"]),
        ("db.writing() + store.insert (SQLAlchemy)", t["insert"]),
        ("  (raw sqlite3 executemany of the same rows)", t["raw"]),
        (
            "rest: Flask, werkzeug, test client (+ noise)",
            t["post"] - t["loads"] - t["validate"] - t["prepare"] - t["insert"],
        ),
    ]:
        print(f"  {label:<43} {value:7.2f} us  {value / t['post']:4.0%}")
    print(f"  => one worker process tops out near {1e6 / t['post']:,.0f} records/s")
    print(f"     (raw sqlite3 alone: {1e6 / t['raw']:,.0f} records/s)")


# ---- py-spy on the real workers ------------------------------------------------------------

# Where a request thread of a worker is, by the first frame found in its stack.
SPY_CATEGORIES = (
    ("waiting for SQLite's write lock (BEGIN IMMEDIATE)", "_sqlite_begin ("),
    ("COMMIT", "do_commit ("),
    ("the INSERT (sqlite3 executemany / PostgreSQL COPY)", insert_frames()),
    ("waiting for a PostgreSQL host lock (store.lock_hosts)", "lock_hosts ("),
    ("store.resolve_gpus (other than BEGIN)", "resolve_gpus ("),
    ("store.insert (filling in GPU ids)", "insert (gpumetrics/store.py"),
    ("store.prepare (building rows, before the transaction)", "prepare (gpumetrics/store.py"),
    ("ingest.validate", "validate (gpumetrics/ingest.py"),
    ("reading and parsing the body", "_parse_body ("),
)


def py_spy(
    server_env: dict[str, str], bodies: list[bytes], batch: int, clients: int, tmp: Path, app: str = "wsgi:app"
) -> None:
    """One more new-connection run with py-spy sampling both workers (wall clock, idle included)."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        print("\n(py-spy not installed: .venv/bin/pip install py-spy==0.4.3 for the worker profile)")
        return
    out = tmp / "py-spy.txt"
    print("\nservice under py-spy (new-connection; sampling 100/s, without pausing the workers) ...", flush=True)
    with Server(server_env, tmp, app=app) as server:
        command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--idle", "--nonblocking"]
        command += ["--format", "raw", "--rate", "100", "--output", str(out), "--duration", "600"]
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attached to both workers
        result = through_service(server, bodies, batch, clients, 2, True)
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, errors = recorder.communicate(timeout=60)
    if not out.exists():
        print(f"  py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}")
        return
    counts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if "handle_request (" not in stack or not number.isdigit():
            continue  # idle pool threads, the main loop, the scheduler
        total += int(number)
        label = spy_label(stack, SPY_CATEGORIES, "Flask, gunicorn, the rest")
        counts[label] = counts.get(label, 0) + int(number)
    print(f"  {result['rate']:,.0f} records/s under the profiler; {total:,} samples of threads serving a request")
    print("\n## Where the workers' request threads spend their wall time (py-spy, idle included)")
    for label, number in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {label:<52} {number / total:6.1%}")


# ---- main ---------------------------------------------------------------------------------


MODES = {"keep-alive": False, "new-connection": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records POSTed per mode (default 200000)")
    parser.add_argument("--batch", type=int, default=1000, help="records per POST (default 1000)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent client threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn WORKERS (default 2)")
    parser.add_argument(
        "--connections",
        choices=[*MODES, "both"],
        default="both",
        help="keep-alive: one connection per client thread; new-connection: one per POST; both (default)",
    )
    parser.add_argument(
        "--database-url",
        help="service database (default: a fresh SQLite file in a temp dir per mode); a PostgreSQL URL "
        "(postgresql+psycopg://postgres@127.0.0.1:5432/DB) is compared with psycopg executemany into a "
        "scratch schema instead of sqlite3",
    )
    parser.add_argument("--profile-posts", type=int, default=50, help="POSTs under cProfile (default 50)")
    parser.add_argument("--top", type=int, default=25, help="rows of each profile table (default 25)")
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process profile")
    parser.add_argument(
        "--py-spy", action="store_true", help="also sample the real workers with py-spy (pip install py-spy==0.4.3)"
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
    warmup = 2
    if args.records < args.batch * args.clients * (warmup + 5):
        raise SystemExit("--records too small for the warm-up and a timed run")
    modes = list(MODES) if args.connections == "both" else [args.connections]
    total = args.records * len(modes)
    # Recent times (within any retention window), offset by a random number of
    # microseconds so that a re-run against the same database stores everything again.
    span = total // PER_SECOND + 1
    base = (times.now_micros() // 1_000_000 - span - 60) * 1_000_000 + random.randrange(1, 1_000_000)
    print(f"preparing {total:,} records ({args.records:,} per mode) ...", flush=True)
    records = make_records(total, base)
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches_of(records, args.batch)]
    per_mode = args.records // args.batch
    print(f"  {len(bodies)} bodies of {args.batch} records, {sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each")

    tmp = Path(tempfile.mkdtemp(prefix="gpumetrics-bench-"))
    is_sqlite = args.database_url is None or args.database_url.startswith("sqlite")
    baseline = "sqlite3 executemany" if is_sqlite else "psycopg executemany"
    same_rows = records[: per_mode * args.batch]

    def raw(when: str) -> float:
        print(f"raw {baseline} ({when}) ...", flush=True)
        if is_sqlite:
            rate = raw_sqlite(tmp / "raw.db", same_rows, args.batch)
        else:
            rate = raw_postgresql(args.database_url, same_rows, args.batch)
        print(f"  {rate:,.0f} records/s")
        return rate

    trial = {f"BENCH_{item.partition('=')[0].upper()}": item.partition("=")[2] for item in args.experiment}
    app = "bench.experiment:app" if args.experiment else "wsgi:app"
    if args.experiment:
        print(f"experiment: the service is bench/experiment.py with {', '.join(args.experiment)}")
    raw_before = raw("before")
    results = {}
    for number, mode in enumerate(modes):
        scratch = contextlib.nullcontext() if is_sqlite else ScratchPostgres(args.database_url, f"ingest_{number}")
        url = args.database_url or f"sqlite:///{tmp / f'service-{mode}.db'}"
        url = url if is_sqlite else scratch.url  # a database of its own, dropped after the run
        mine = bodies[number * per_mode : (number + 1) * per_mode]
        print(
            f"service: gunicorn WORKERS={args.workers}, {args.clients} client threads, {mode}, "
            f"{url.split('@')[-1]} ...",
            flush=True,
        )
        env = {"DATABASE_URL": url, "WORKERS": str(args.workers), "MAX_BATCH": str(max(10_000, args.batch)), **trial}
        with scratch, Server(env, tmp, app=app) as server:
            result = through_service(server, mine, args.batch, args.clients, warmup, MODES[mode])
        results[mode] = result
        split = " + ".join(f"{cores:.2f}" for cores in result["worker_cores"])
        print(
            f"  {result['rate']:,.0f} records/s ({result['timed_records']:,} records in {result['elapsed']:.2f} s; "
            f"POST latency median {result['latency_median'] * 1e3:.0f} ms, max {result['latency_max'] * 1e3:.0f} ms)\n"
            f"  CPU in use, in cores: workers {split}, this client {result['client_cores']:.2f}, "
            f"whole machine {result['machine_cores']:.2f} of {os.cpu_count()}"
        )
        if result["problems"]:
            print(f"  !! {len(result['problems'])} POSTs not fully stored, e.g. {result['problems'][0]}")
        if args.database_url is None:
            conn = sqlite3.connect(tmp / f"service-{mode}.db")
            count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
            conn.close()
            print(f"  records in the service's database: {count:,} (expected {len(mine) * args.batch:,})")
            assert count == len(mine) * args.batch, count
    raw_after = raw("after")
    raw_rate = (raw_before + raw_after) / 2

    print("\n## Ingest result")
    print(f"  raw {baseline:<24} {raw_rate:>9,.0f} records/s  (before {raw_before:,.0f}, after {raw_after:,.0f})")
    for mode, result in results.items():
        ratio = result["rate"] / raw_rate
        target_rate = TARGET_RATE if is_sqlite else TARGET_RATE_POSTGRESQL
        rate_ok = "MET" if result["rate"] >= target_rate else "MISSED"
        ratio_ok = "MET" if ratio >= TARGET_RATIO else "MISSED"
        split = " + ".join(f"{cores:.2f}" for cores in result["worker_cores"])
        print(
            f"  service, {mode:<19} {result['rate']:>9,.0f} records/s  = {ratio:5.1%} of raw   "
            f"[>= {target_rate:,}/s: {rate_ok}; >= {TARGET_RATIO:.0%}: {ratio_ok}]  worker CPU {split} cores"
        )
    sys.stdout.flush()

    if args.py_spy:
        url = args.database_url or f"sqlite:///{tmp / 'service-py-spy.db'}"
        env = {"DATABASE_URL": url, "WORKERS": str(args.workers), "MAX_BATCH": str(max(10_000, args.batch)), **trial}
        base = (times.now_micros() // 1_000_000 - 2 * span - 120) * 1_000_000 + random.randrange(1, 1_000_000)
        spied = make_records(args.records, base)
        spied_bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches_of(spied, args.batch)]
        py_spy(env, spied_bodies, args.batch, args.clients, tmp, app)
    if not args.no_profile:
        profile(records, args.batch, args.profile_posts, args.top)
    if any(result["problems"] for result in results.values()):
        print(f"\n(kept {tmp} with the gunicorn logs)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
