"""The service beside VictoriaMetrics: the same records in both, five paired chart queries timed in one run.

    .venv/bin/python bench/compare.py [--records 10000000] [--repeat 20] [--database-url URL [--keep]]
                                      [--tree PATH]... [--explain] [--profile]

Why: issue 12 holds the service's chart queries to a purpose-built time-series database:
through HTTP, on SQLite and on PostgreSQL, every query within 2x of VictoriaMetrics' time
in the same run. On this shared, noisy machine only a same-run ratio means anything, and
only a ratio of the same question. So both hold the very same records (bench/victoria.py's
`records(n, end)`: 8 GPUs x 6 kinds, one a second, ending at `end`); every answer of both
is checked against the rows themselves (victoria.Truth) and against each other before
anything is timed; and each pair is timed back to back, round-robin, by the same HTTP
client (a requests.Session; the answer's JSON parsed), the order within a pair rotating.

The service's records go in through its own write path (validate, prepare, store_records,
as a POST does), so its rollups and its latest copies are built as in production; HTTP
ingest is bench/ingest.py's subject. On SQLite the database is cached in
bench/data/compare-<records>-<end>.db (git-ignored, rebuilt when the migrations move on;
the data's end is read from the name, so VictoriaMetrics gets the same rows again);
bench/export.py reuses it. With --database-url the records go into a scratch PostgreSQL
database, VACUUM ANALYZEd (what autovacuum does in time) and dropped after the run; with
--keep it is left there (gpumetrics_bench_compare_<records>_<end>) and reused by the next
--keep run, so that a 10M load is paid once: drop it when done.

Every window is [start, end) in whole minutes. The service's `end` is inclusive, in
microseconds, so it is asked for start .. end - 1 µs; VictoriaMetrics at end - 1 ms (see
victoria.py). /stats is compared on the measured fields: the service does not aggregate
a process's pid, so VictoriaMetrics is asked without the pid series (victoria.MEASURED).
Latest values: VictoriaMetrics looks back 5 minutes, the service has no window (the
data's newest second is end - 1 for every series, so both see all of them).

Bytes on disk per record: the SQLite file and its -wal after a TRUNCATE checkpoint, or
PostgreSQL's pg_database_size after VACUUM; VictoriaMetrics: every file under its
-storageDataPath after a forced merge.

--tree (repeatable) runs the service from other checkouts (a copy with a proposed change),
each against the same VictoriaMetrics in the same rounds. --explain prints, for each query
this checkout misses, every SELECT it runs (served in-process) with its time and plan;
--profile, a cProfile of them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import requests
import victoria
from sqlalchemy import event
from sqlalchemy.engine import make_url

from gpumetrics import times
from gpumetrics.db import Database

TARGET = 2.0  # the service's median over VictoriaMetrics', at most
HOUR = 3600

# ---- loading the service ---------------------------------------------------------------------------


def head_revision() -> str | None:
    """The revision the service's migrations lead to now."""
    with tempfile.TemporaryDirectory() as tmp:
        head = Database(f"sqlite:///{tmp}/head.db")
        head.upgrade()
        revision = head.revision()
        head.dispose()
    return revision


def cached_sqlite(records: int) -> tuple[str, int]:
    """(URL, end) of bench/data/compare-<records>-<end>.db, built now (end: this hour) unless a current one exists.

    A file left by older migrations is removed, not reused: its rollups or latest copies could differ.
    """
    wanted = head_revision()
    for path in sorted(common.DATA.glob(f"compare-{records}-*.db"), reverse=True):
        existing = Database(f"sqlite:///{path}")
        current = existing.revision()
        existing.dispose()
        if current == wanted:
            print(f"reusing {path.relative_to(common.ROOT)}", flush=True)
            return f"sqlite:///{path}", int(path.stem.rsplit("-", 1)[1])
        print(f"removing {path.relative_to(common.ROOT)} (revision {current}, not {wanted})", flush=True)
        for suffix in ("", "-wal", "-shm", ".write.lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    end = victoria.hour_start()
    path = common.DATA / f"compare-{records}-{end}.db"
    building = path.with_name(path.name + ".building")
    building.unlink(missing_ok=True)  # a build that was interrupted
    common.DATA.mkdir(exist_ok=True)
    print(f"building {path.relative_to(common.ROOT)}: {records:,} records through the write path", flush=True)
    common.load_records(f"sqlite:///{building}", victoria.records(records, end), records)
    sqlite_bytes(building)  # checkpoints the WAL into the file
    os.replace(building, path)
    for suffix in ("-wal", "-shm", ".write.lock"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}", end


def sqlite_bytes(path: Path | str) -> int:
    """The file and its -wal after a TRUNCATE checkpoint: what the database holds on disk."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (wal.stat().st_size if wal.exists() else 0)


def postgres(url: str):
    """An autocommit psycopg connection to the database of a service URL."""
    import psycopg

    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False), autocommit=True)


def postgres_bytes(url: str) -> int:
    """pg_database_size after VACUUM ANALYZE (ANALYZE: what autovacuum would have done by the time anyone asks)."""
    with postgres(url) as conn:
        conn.execute("VACUUM ANALYZE")
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def kept_postgres(server_url: str, records: int) -> tuple[str, int] | None:
    """(URL, end) of a database a --keep run left on the server for `records`, if its migrations are current."""
    prefix = f"gpumetrics_bench_compare_{records}_"
    with postgres(server_url) as conn:
        names = [
            row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"])
        ]
    wanted = head_revision()
    for name in sorted(names, reverse=True):
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        existing = Database(url)
        current = existing.revision()
        existing.dispose()
        if current == wanted:
            print(f"reusing the PostgreSQL database {name} (kept by --keep; drop it when done)", flush=True)
            return url, int(name.rsplit("_", 1)[1])
    return None


@contextmanager
def scratch_postgres(server_url: str, records: int, keep: bool) -> Iterator[tuple[str, int]]:
    """A new database on the server loaded with records(records, end), VACUUM ANALYZEd; dropped after unless `keep`."""
    end = victoria.hour_start()
    name = f"gpumetrics_bench_compare_{records}_{end}"
    with postgres(server_url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        print(f"loading {records:,} records into the PostgreSQL database {name} through the write path", flush=True)
        common.load_records(url, victoria.records(records, end), records)
        yield url, end
    finally:
        if not keep:
            with postgres(server_url) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def service_data(server_url: str | None, records: int, keep: bool = False) -> Iterator[tuple[str, int, int]]:
    """(URL, end, bytes on disk) of a database holding records(records, end): cached SQLite, or PostgreSQL.

    On PostgreSQL a scratch database, dropped after the run; with `keep` it stays, and later runs with `keep` reuse it.
    """
    if not common.is_postgres(server_url):
        url, end = cached_sqlite(records)
        yield url, end, sqlite_bytes(make_url(url).database)
        return
    kept = kept_postgres(server_url, records) if keep else None
    if kept is not None:
        yield *kept, postgres_bytes(kept[0])
        return
    with scratch_postgres(server_url, records, keep) as (url, end):
        yield url, end, postgres_bytes(url)


# ---- the paired questions --------------------------------------------------------------------------


def seconds(iso: str) -> int:
    return victoria.millis(iso) // 1000


def unpid(answer: dict[tuple, Any]) -> dict[tuple, Any]:
    """Series keyed (kind, field, host, gpu), without the pid label: each GPU here has one process."""
    return {key[:4]: value for key, value in answer.items()}


def series_shape(answer: dict[str, Any]) -> dict[int, dict[int, float]]:
    """GET /metrics/series as {gpu: {bucket start, epoch s: value}}."""
    return {one["gpuIndex"]: {seconds(at): value for at, value in one["points"]} for one in answer["series"]}


def latest_shape(answer: dict[str, Any]) -> dict[tuple, dict[str, float]]:
    """GET /metrics/latest as {(kind, field, host, gpu): {last_over_time, tlast_over_time}}."""
    out = {}
    for item in answer["items"]:
        for field in victoria.KINDS[item["metric"]]:
            key = (item["metric"], field, item.get("host") or "", item["gpuIndex"])
            out[key] = {"last_over_time": item[field], "tlast_over_time": seconds(item["timestamp"])}
    return out


def stats_shape(answer: dict[str, Any]) -> dict[tuple, dict[str, float]]:
    """GET /stats as {(kind, field, host, gpu): figures named as VictoriaMetrics names them}; absent fields left out."""
    out = {}
    for gpu in answer["gpus"]:
        for kind, stats in gpu["metrics"].items():
            when = {"tfirst_over_time": seconds(stats["first"]), "tlast_over_time": seconds(stats["last"])}
            for field, figures in stats["fields"].items():
                if figures["avg"] is None:  # a field these records do not carry (smMHz)
                    continue
                out[(kind, field, gpu["host"] or "", gpu["gpuIndex"])] = {
                    **{f"{name}_over_time": figures[name] for name in ("min", "max", "avg", "last")},
                    "count_over_time": stats["count"],
                    **when,
                }
    return out


@dataclass(frozen=True)
class Pair:
    """One question, asked of both: VictoriaMetrics' request, the service's path, and what the rows say."""

    label: str
    victoria: Callable[[], tuple[float, Any]]  # (seconds, answer in the shape of `want`)
    path: str
    shape: Callable[[Any], Any]  # the service's JSON in the shape of `want`
    want: Any


def reshaped(ask: Callable[[], tuple[float, Any]], shape: Callable[[Any], Any]) -> Callable[[], tuple[float, Any]]:
    def asked() -> tuple[float, Any]:
        spent, answer = ask()
        return spent, shape(answer)

    return asked


def pairs(vm: victoria.Victoria, truth: victoria.Truth, first: int, end: int) -> list[Pair]:
    """The five questions of the issue; `end` is a whole hour, `first` the data's first second."""

    def path(route: str, start: int | None = None, **args: Any) -> str:
        if start is not None:  # [start, end) as the service's inclusive bounds
            args.update(start=times.to_iso(start * common.SECOND), end=times.to_iso(end * common.SECOND - 1))
        return f"{route}?{urllib.parse.urlencode(args)}" if args else route

    six, hours = end - 6 * HOUR, (first // HOUR * HOUR, end)
    average = {"aggregate": "avg", "field": "gpuPercent", "metric": "utilization", "gpuIndex": 0, "host": victoria.HOST}
    chart = {"metric": "utilization", "field": "gpuPercent"}
    measured = {key: value for key, value in truth.hour_stats().items() if key[1] != "pid"}
    return [
        Pair(
            "a. avg gpuPercent, GPU 0, whole range",
            lambda: vm.whole_average(0, first, end),
            path("/metrics/aggregate", first, **average),
            lambda answer: answer["value"],
            truth.average(0),
        ),
        Pair(
            "b. 1-min avg, 8 GPUs, last 6 h",
            lambda: vm.buckets(60, six, end),
            path("/metrics/series", six, **chart, step="1m"),
            series_shape,
            truth.buckets(60, six, end),
        ),
        Pair(
            "c. 1-h avg, 8 GPUs, whole range",
            lambda: vm.buckets(3600, *hours),
            path("/metrics/series", hours[0], **chart, step="1h"),
            series_shape,
            truth.buckets(3600, *hours),
        ),
        Pair(
            "d. latest values, fleet",
            reshaped(lambda: vm.latest(end), unpid),
            path("/metrics/latest"),
            latest_shape,
            unpid(truth.newest()),
        ),
        Pair(
            "e. /stats, fleet, last hour",
            reshaped(lambda: vm.hour_stats(end, victoria.MEASURED), unpid),
            path("/stats", end - HOUR),
            stats_shape,
            unpid(measured),
        ),
    ]


class Client:
    """The service's half of each pair: the same client as victoria.Victoria.get (requests, JSON parsed)."""

    def __init__(self, server: common.Server) -> None:
        self.url = server.url
        self.session = requests.Session()

    def get(self, path: str) -> tuple[float, Any]:
        began = time.perf_counter()
        answer = self.session.get(self.url + path)
        body = answer.json()
        spent = time.perf_counter() - began
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {body}")
        return spent, body


# ---- checking and timing ---------------------------------------------------------------------------


def leaves(answer: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every number of an answer with where it is, in order."""
    if isinstance(answer, dict):
        for key in sorted(answer, key=str):
            yield from leaves(answer[key], f"{where}[{key}]")
    else:
        yield where, answer


def check(asked: list[Pair], client: Client) -> None:
    """The service, VictoriaMetrics and the rows agree on every number of every pair, or the run stops."""
    for pair in asked:
        service, vm = pair.shape(client.get(pair.path)[1]), pair.victoria()[1]
        for who, got, want in (
            ("service", service, pair.want),
            ("VictoriaMetrics", vm, pair.want),
            ("service", service, vm),
        ):
            problem = victoria.difference(got, want)
            if problem:
                against = "VictoriaMetrics" if want is vm else "the rows"
                raise SystemExit(f"{pair.label}: {who} disagrees with {against} at {problem}")
        numbers, theirs = list(leaves(service)), dict(leaves(vm))
        shown = "; ".join(f"{where or 'value'}: {value} and {theirs[where]}" for where, value in numbers[:2])
        print(f"  checked {pair.label}: {len(numbers):,} numbers agree (service = VictoriaMetrics = rows); {shown}")


def timed(asked: list[Pair], clients: list[Client], repeat: int) -> list[list[list[float]]]:
    """spent[pair][who]: seconds of each request, who 0 being VictoriaMetrics and then each service; after 2 untimed
    rounds. A pair's requests run back to back, their order rotating from round to round, so that none always finds
    the caches another warmed."""
    spent = [[[] for _ in range(1 + len(clients))] for _ in asked]
    for number in range(2 + repeat):
        for pair, taken in zip(asked, spent, strict=True):
            turn = number % len(taken)
            for who in [*range(turn, len(taken)), *range(turn)]:
                took = pair.victoria()[0] if who == 0 else clients[who - 1].get(pair.path)[0]
                if number >= 2:
                    taken[who].append(took)
    return spent


def report(asked: list[Pair], spent: list[list[list[float]]], trees: list[str], disk: dict[str, int], records: int):
    """Medians, each service's ratio to VictoriaMetrics and its verdict; bytes on disk per record.

    Returns the pairs the first service missed.
    """
    rows, missed = [], []
    for pair, taken in zip(asked, spent, strict=True):
        vm = statistics.median(taken[0])
        cells = []
        for index, service in enumerate(taken[1:]):
            ratio = statistics.median(service) / vm
            if ratio > TARGET and index == 0:
                missed.append(pair)
            cells += [
                common.ms(statistics.median(service)),
                f"{ratio:.2f}× {'met' if ratio <= TARGET else '**missed**'}",
            ]
        rows.append([pair.label, common.ms(vm), *cells])
    print(f"\n{records:,} records; medians of {len(spent[0][0])} rounds, each pair back to back (an HTTP request each)")
    names = ["service"] if len(trees) == 1 else trees
    columns = [column for name in names for column in (name, f"ratio (target ≤ {TARGET:g}×)")]
    common.table(["query", "VictoriaMetrics", *columns], rows)
    vm_bytes = disk["VictoriaMetrics"]
    print()
    common.table(
        ["on disk", "bytes", "bytes/record", "× VictoriaMetrics"],
        [[who, f"{size:,}", f"{size / records:.2f}", f"{size / vm_bytes:.1f}×"] for who, size in disk.items()],
    )
    return missed


# ---- why a query is slow ------------------------------------------------------------------------


@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs the engine runs inside the block, with their parameters, as the driver got them."""
    ran: list[tuple[str, Any]] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            ran.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield ran
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def replay(db: Database, statement: str, parameters: Any, repeat: int) -> list[float]:
    """Seconds to run one captured statement and fetch every row (SQLite does most of its work while fetching)."""
    spent = []
    with db.reading() as conn:
        for _ in range(repeat):
            began = time.perf_counter()
            conn.exec_driver_sql(statement, parameters).fetchall()
            spent.append(time.perf_counter() - began)
    return spent


def plan(db: Database, statement: str, parameters: Any) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN, or PostgreSQL's EXPLAIN (ANALYZE, BUFFERS), as lines."""
    sqlite = db.backend.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    with db.reading() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).fetchall()
    return [f"{row[1]:>3} {row[3]}" if sqlite else row[0] for row in rows]


def explain(url: str, paths: list[str], repeat: int = 5) -> None:
    """Each request served in-process (Flask's test client), then every SELECT it ran: median time and plan."""
    import config
    from gpumetrics import create_app
    from gpumetrics.state import app_state

    app = create_app(config.load({"DATABASE_URL": url, "METRICS_RETENTION_HOURS": "0", "LOG_LEVEL": "WARNING"}))
    db, client = app_state(app).db, app.test_client()
    try:
        for path in paths:
            client.get(path)  # warm: imports, connections, caches
            began = time.perf_counter()
            with statements(db) as ran:
                client.get(path)
            print(f"\n{path}\n  in-process {common.ms(time.perf_counter() - began)}, {len(ran)} SELECTs:")
            for statement, parameters in ran:
                took = statistics.median(replay(db, statement, parameters, repeat))
                print(f"  {common.ms(took)} (median of {repeat}, rows fetched): {' '.join(statement.split())}")
                print(f"    parameters {parameters}")
                print("\n".join(f"      {line}" for line in plan(db, statement, parameters)))
    finally:
        db.dispose()


# ---- the run ---------------------------------------------------------------------------------------


def parse_args():
    parser = common.arguments(__doc__)
    parser.add_argument("--records", type=int, default=10_000_000, help="records in each system (10000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds (20), after 2 untimed")
    parser.add_argument("--explain", action="store_true", help="the SQL and plans of each query that misses")
    parser.add_argument("--profile", action="store_true", help="cProfile of each query that misses, in-process")
    parser.add_argument("--keep", action="store_true", help="PostgreSQL: keep the loaded database, or reuse a kept one")
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="a checkout to run the service from (this one); repeatable: each is timed in the same rounds",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.tree = args.tree or [common.ROOT]
    common.header("bench/compare.py")
    with (
        tempfile.TemporaryDirectory(prefix="gpumetrics-compare-") as tmp,
        service_data(args.database_url, args.records, args.keep) as (url, end, service_disk),
    ):
        first = end - victoria.span(args.records)
        print(f"  data: {times.to_iso(first * common.SECOND)} to {times.to_iso(end * common.SECOND)} (exclusive)")
        with victoria.Victoria() as vm:
            print(f"  {vm.version}; flags: {' '.join(vm.flags)}", flush=True)
            truth = victoria.Truth(end)
            vm.import_records(truth.watch(victoria.records(args.records, end)))
            vm.merge()
            disk = {"service": service_disk, "VictoriaMetrics": vm.bytes_on_disk()}
            with contextlib.ExitStack() as stack:
                clients = []
                for tree in args.tree:
                    print(f"  the service from {tree} (commit {common.commit_of(tree)})", flush=True)
                    server = stack.enter_context(common.service({"DATABASE_URL": url}, Path(tmp), root=tree))
                    clients.append(Client(server))
                asked = pairs(vm, truth, first, end)
                for client in clients:
                    check(asked, client)
                print(f"  timing; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
                spent = timed(asked, clients, args.repeat)
                print(f"  timed; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        missed = report(asked, spent, [str(tree) for tree in args.tree], disk, args.records)
        if missed and args.explain:
            explain(url, [pair.path for pair in missed])
        if missed and args.profile:
            common.profile_in_process(url, lambda client: [client.get(pair.path) for pair in missed])


if __name__ == "__main__":
    main()
