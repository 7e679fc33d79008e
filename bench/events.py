"""Events: gpumon_client kernel events through the real service, against the driver alone, in the same run.

    .venv/bin/python bench/events.py [--parts batch,single,summary] [--events 1000000] [--rounds 3]
                                     [--single-sec 20] [--repeat 20] [--profile] [--database-url URL]

Why (issue 14, "Speed"): one busy host sends kernel events by the thousand a second, and
the crawler forwards them either in batches or one POST a line. Three targets, each
measured here through the real gunicorn (tests/conftest.py's Server, WORKERS=2, gthread)
and printed beside a baseline measured in the same run, because on this shared, noisy
2-core machine an absolute figure says little:

- batch: `--events` kernel events (1,000,000) POSTed in bodies of 1,000 by 2 keep-alive
  client threads, serialized before timing; target >= 50 % of the driver alone inserting
  the same spans rows: the rows of store.events.prepare_events with the host and boot
  that the service's own store.clocks.assign gives them, SPAN_COLUMNS, into a schema made
  by the service's migrations on a connection of the service's engine (its pragmas),
  one transaction per 1,000: sqlite3 executemany (INSERT ... ON CONFLICT DO NOTHING in
  BEGIN IMMEDIATE ... COMMIT), or on PostgreSQL psycopg COPY straight into spans (every
  row is new, so no conflict handling is needed). Only the driver's inserts are timed.
- single: 4 keep-alive client threads, one event a POST, as the crawler sends a line,
  for `--single-sec` s; events/s (target >= 1,000) with p50/p99 latency, beside GET
  /health by the same clients (what the HTTP stack does with no write) and the driver
  alone committing the same rows one per transaction from 4 threads (on SQLite taking
  turns on a lock, as the service's writers queue on its file lock).
- summary: 1,000,000 kernels loaded in-process through the service's own write path
  (validate, prepare_all, store_all in Database.writing(), 10,000 a transaction; not
  HTTP, which the batch part times), on PostgreSQL then VACUUM ANALYZE (what autovacuum
  does in time); then GET /spans/summary without filters, with a host filter and with a
  host and pid filter (what the dashboard's process view asks for), median of `--repeat`
  round-robin with GET /health (target < 200 ms), and in-process the same summary
  (store.spans.summary, no HTTP) and its SQL alone: the statements it issued, captured
  from the engine and replayed on the driver. Each summary's slowest statement's plan is
  printed (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE).

Runs are interleaved: baseline, service, baseline, ...; a run's ratio is to the mean of
the baselines on either side; tables give the median (min-max) of the rounds. The
events: 8 hosts, 4 pids each, a few kernel names repeating with their own durations,
nanosecond times that only go forward per host (3 days of uptime), 0.2 % failed
launches; each body is one host's, as its crawler forwards them. --profile adds
cProfile of single POSTs and of the summaries served in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import socket
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
from ingest import percent, post_all, spread
from query import analyze_postgres
from sqlalchemy import event

from gpumetrics.db import Database
from gpumetrics.records.events import EXAMPLES
from gpumetrics.records.validate import validate
from gpumetrics.store import clocks
from gpumetrics.store import spans as span_store
from gpumetrics.store.events import SPAN_COLUMNS, prepare_events
from gpumetrics.store.ingest import prepare_all, store_all

TEMPLATE = EXAMPLES["kernel"]
HOSTS = tuple(f"gpu-node-{n:02d}" for n in range(1, 9))
PIDS = (4101, 4102, 4103, 4104)
UPTIME_NS = 3 * 86_400 * 10**9
NAMES = (  # (kernel, typical duration ns, weight): a training step's kernels, repeating
    ("ampere_sgemm_128x64_nn", 250_000, 30),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", 12_000, 25),
    ("void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1>", 60_000, 15),
    ("softmax_warp_forward<float, float, float, 10, false>", 20_000, 12),
    ("void reduce_kernel<512, 1, ReduceOp<float, MeanOps<float, float>>>", 35_000, 10),
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)", 900_000, 5),
    ("ampere_fp16_s16816gemm_fp16_256x128_ldg8_f2f_stages_32x3_nn", 400_000, 3),
)
FAILED = "cudaErrorLaunchOutOfResources"
BATCH = 1000  # events a body, and rows a baseline transaction
Table = tuple[str, list[str], list[list[str]]]  # a title, its columns, its rows
TARGETS = {"batch": 0.5, "single": 1000.0, "summary": 0.2}  # ratio to raw, events/s, seconds


# ---- the events ----------------------------------------------------------------------------------


class Kernels:
    """Kernel events as busy hosts' crawlers forward them: per host, times that only go forward."""

    def __init__(self, seed: int, hosts: tuple[str, ...] = HOSTS) -> None:
        self.rng = random.Random(seed)
        self.now = {host: UPTIME_NS + n * 3_600 * 10**9 for n, host in enumerate(hosts)}
        self.sent = dict.fromkeys(hosts, 0)

    def take(self, host: str, count: int) -> list[dict[str, Any]]:
        rng, ts, sent, out = self.rng, self.now[host], self.sent[host], []
        for kernel, typical, _ in rng.choices(NAMES, [weight for *_, weight in NAMES], k=count):
            duration = max(1_000, int(rng.gauss(typical, typical / 8)))
            ts += rng.randint(2_000, 40_000)  # the gap between launches
            out.append(
                {
                    **TEMPLATE,
                    "hostname": host,
                    "pid": PIDS[rng.randrange(len(PIDS))],
                    "kernel": kernel,
                    "ts_start_ns": ts,
                    "ts_end_ns": ts + duration,
                    "duration_ns": duration,
                    "shared_mem_bytes": rng.choice((0, 0, 0, 16_384)),
                    "cuda_error": FAILED if rng.random() < 0.002 else "cudaSuccess",
                    "tag": f"epoch{sent // 50_000 + 1}",
                }
            )
            ts, sent = ts + duration, sent + 1
        self.now[host], self.sent[host] = ts, sent
        return out


def chunks(count: int, per: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """`count` kernel events in lists of `per`, each one host's, the hosts in turn."""
    kernels = Kernels(seed)
    for n in range(count // per):
        yield kernels.take(HOSTS[n % len(HOSTS)], per)


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def validated(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events the service makes of the items (its own validation); every one must pass."""
    checked = validate(items)
    if checked.rejected or checked.records:
        raise SystemExit(f"the generator made something else than valid events: {checked.rejected[:3]}")
    return checked.events


# ---- the baseline: the driver alone ----------------------------------------------------------------


def span_rows(db: Database, events: list[dict[str, Any]]) -> list[list[Any]]:
    """The spans rows of events, host and boot from the service's clocks.assign."""
    batch = prepare_events(events)
    with db.writing() as conn:
        assigned = clocks.assign(conn, list(zip(batch.hosts, batch.times, strict=True)), time.time_ns())
    return [[clock.host, clock.boot, *row] for clock, row in zip(assigned, batch.spans, strict=True)]


class RawSpans(common.DriverInserts):
    """The spans rows the service would write for events, inserted by the driver alone.

    Rows from span_rows. One object a thread: each has its own connection to `db`.
    """

    def __init__(self, db: Database) -> None:
        super().__init__(db, "spans", SPAN_COLUMNS)

    def insert_one(self, row: list[Any]) -> None:
        """One row, one transaction, as a POST of one event makes."""
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(self.sql, row)
            self.conn.execute("COMMIT")
        else:
            self.conn.execute(self.sql, row)
            self.conn.commit()


def migrated(url: str) -> Database:
    db = Database(url)
    db.upgrade()
    return db


@dataclass(frozen=True)
class Run:
    rate: float  # events (or requests) a second
    per_cpu: float = float("nan")  # events per CPU-second of the process(es) doing the work
    note: str = ""
    latencies: list[float] = field(default_factory=list)


def interleaved(rounds: int, baseline: Callable[[], Run], measured: Callable[[], Run], what: str):
    """A baseline, then per round the measurement and a baseline again.

    Returns the baselines, the runs, and per run the mean of the baselines on either side.
    """
    baselines, runs = [baseline()], []
    print(f"  {what} baseline: {common.rate(baselines[-1].rate)}/s", flush=True)
    for _ in range(rounds):
        runs.append(measured())
        print(f"  {what} service: {common.rate(runs[-1].rate)}/s {runs[-1].note}", flush=True)
        baselines.append(baseline())
        print(f"  {what} baseline: {common.rate(baselines[-1].rate)}/s", flush=True)
    around = [Run(*(statistics.mean(getattr(b, name) for b in baselines[n : n + 2]) for name in ("rate", "per_cpu")))
              for n in range(rounds)]  # fmt: skip
    return baselines, runs, around


def ratios(runs: list[Run], around: list[Run], name: str = "rate") -> list[float]:
    return [getattr(run, name) / getattr(base, name) for run, base in zip(runs, around, strict=True)]


def verdict(value: float, target: float, higher: bool = True) -> str:
    return "met" if (value >= target if higher else value < target) else "MISSED"


# ---- batch: 1,000 events a POST ----------------------------------------------------------------------


def raw_batch(url: str, bodies: list[list[list[Any]]]) -> Run:
    """The driver alone inserting every body's rows, one transaction a body."""
    db = migrated(url)
    writer = RawSpans(db)
    try:
        began, cpu = time.perf_counter(), time.process_time()
        for rows in bodies:
            writer.insert(rows)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        writer.close()
        db.dispose()
    count = sum(map(len, bodies))
    return Run(count / wall, count / cpu)


def prepared(args, bodies: list[bytes], folder: Path) -> list[list[list[Any]]]:
    """Each body's spans rows, made once (in a scratch database, for the clocks) for every baseline."""
    with common.fresh_database(args.database_url, folder, "rows") as url:
        db = migrated(url)
        try:
            return [span_rows(db, validated(json.loads(data))) for data in bodies]
        finally:
            db.dispose()


def service_batch(args, bodies: list[bytes], folder: Path) -> Run:
    """gunicorn on a fresh database, 2 keep-alive clients; checks that every kernel was stored."""
    with common.fresh_database(args.database_url, folder, "service") as url:
        with common.service({"DATABASE_URL": url}, folder) as server:
            before, began = common.worker_cpu(server), time.perf_counter()
            rate = post_all(server, bodies, 2, keep_alive=True)
            cpu, elapsed = common.cpu_since(server, before), time.perf_counter() - began
            stored = sum(item["instances"] for item in common.get_json(server, "/spans/summary")["items"])
    if stored != len(bodies) * BATCH:
        raise SystemExit(f"the service holds {stored:,} kernels, not {len(bodies) * BATCH:,}")
    cores = " + ".join(f"{seconds / elapsed:.2f}" for seconds in cpu)
    return Run(rate, len(bodies) * BATCH / sum(cpu), f"(workers {cores} cores)")


def batch_part(args, folder: Path) -> Table:
    print(f"\nbatch: {args.events:,} kernel events in bodies of {BATCH}", flush=True)
    bodies = [encode(chunk) for chunk in chunks(args.events, BATCH, seed=1)]
    print(f"  {sum(map(len, bodies)) / 2**20:.0f} MiB of JSON, serialized", flush=True)

    rows = prepared(args, bodies, folder)

    def baseline() -> Run:
        with common.fresh_database(args.database_url, folder, "raw") as url:
            return raw_batch(url, rows)

    baselines, runs, around = interleaved(args.rounds, baseline, lambda: service_batch(args, bodies, folder), "batch")
    postgres = common.is_postgres(args.database_url)
    raw = "raw psycopg COPY" if postgres else "raw sqlite3 executemany"
    rate, cpu = ratios(runs, around), ratios(runs, around, "per_cpu")
    per_cpu = ("", "") if postgres else (spread([b.per_cpu for b in baselines], common.rate), spread(cpu, percent))
    rows = [
        [f"{raw}, 1,000 a transaction", spread([b.rate for b in baselines], common.rate), "", "", per_cpu[0], ""],
        ["service: POST 1,000 a body, 2 clients", spread([r.rate for r in runs], common.rate), spread(rate, percent),
         f">= {TARGETS['batch']:.0%}: {verdict(statistics.median(rate), TARGETS['batch'])}",
         spread([r.per_cpu for r in runs], common.rate), per_cpu[1]],
    ]  # fmt: skip
    title = f"batch: {args.events:,} kernel events per run; median (min-max) of {args.rounds} rounds"
    return title, ["what", "events/s", "ratio to raw", "target", "events per CPU-s", "ratio"], rows


# ---- single: one event a POST --------------------------------------------------------------------------


class Sender:
    """What one client thread does: send() until it raises StopIteration; close()."""

    def send(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Wire:
    """A keep-alive HTTP/1.1 connection that sends whole requests made beforehand and reads
    answers by their Content-Length. The clients share the service's 2 cores, and the
    crawler's C++ client costs next to nothing: http.client's 270 us of CPU a POST (a
    quarter of a core at 1,000 a second) would be counted as the service's, this one's 100."""

    def __init__(self, server: common.Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; its status and body."""
        self.sock.sendall(request)
        while (head_end := self.pending.find(b"\r\n\r\n")) < 0:
            self.receive()
        head = self.pending[:head_end]
        end = head_end + 4 + int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])
        while len(self.pending) < end:
            self.receive()
        answer, self.pending = self.pending[head_end + 4 : end], self.pending[end:]
        return int(head[9:12]), answer

    def receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("the service closed the connection")
        self.pending += data

    def close(self) -> None:
        self.sock.close()


def post_request(line: bytes) -> bytes:
    head = f"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(line)}"
    return head.encode() + b"\r\n\r\n" + line


class Poster(Sender):
    """One event a POST on a keep-alive connection, as the crawler sends a line."""

    def __init__(self, server: common.Server, lines: list[bytes]) -> None:
        self.wire, self.lines = Wire(server), iter(lines)

    def send(self) -> None:
        status, answer = self.wire.exchange(post_request(next(self.lines)))
        if status != 201 or json.loads(answer)["stored"] != 1:
            raise RuntimeError(f"POST of one event: {status} {answer[:300]!r}")

    def close(self) -> None:
        self.wire.close()


class Prober(Sender):
    """GET /health on a keep-alive connection: what the HTTP stack costs with no write."""

    REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, server: common.Server) -> None:
        self.wire = Wire(server)

    def send(self) -> None:
        status, answer = self.wire.exchange(self.REQUEST)
        if status != 200:
            raise RuntimeError(f"GET /health: {status} {answer[:300]!r}")

    def close(self) -> None:
        self.wire.close()


class RowCommitter(Sender):
    """The driver alone: one row a transaction; SQLite's writers take turns on `turn`."""

    def __init__(self, db: Database, rows: list[list[Any]], turn: threading.Lock | None) -> None:
        self.writer, self.rows, self.turn = RawSpans(db), iter(rows), turn

    def send(self) -> None:
        row = next(self.rows)
        if self.turn is None:
            self.writer.insert_one(row)
            return
        with self.turn:
            self.writer.insert_one(row)

    def close(self) -> None:
        self.writer.close()


def hammer(makers: list[Callable[[], Sender]], seconds: float, warmup: int = 20) -> Run:
    """Each maker's sender in a thread of its own, called back to back for `seconds` after `warmup`
    untimed calls; calls a second over all threads, and every call's latency."""
    start = [0.0]
    ready = threading.Barrier(len(makers) + 1, action=lambda: start.__setitem__(0, time.perf_counter()))
    errors, latencies, ends = [], [], []

    def client(make: Callable[[], Sender]) -> None:
        sender = None
        try:
            sender = make()
            for _ in range(warmup):
                sender.send()
            ready.wait()
            mine, deadline = [], start[0] + seconds
            while (now := time.perf_counter()) < deadline:
                try:
                    sender.send()
                except StopIteration:
                    break
                mine.append(time.perf_counter() - now)
            latencies.extend(mine)
            ends.append(time.perf_counter())
        except Exception as error:  # reported below: a thread's exception would vanish
            errors.append(error)
            ready.abort()
        finally:
            if sender is not None:
                sender.close()

    threads = [threading.Thread(target=client, args=(make,)) for make in makers]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: said below
        ready.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    return Run(len(latencies) / (max(ends) - start[0]), latencies=latencies)


CLIENTS = 4  # single POSTs: client threads
WARMUP = 20  # calls of each client before timing


def raw_single(args, events: list[list[dict[str, Any]]], folder: Path) -> Run:
    """The driver alone committing each client's rows one a transaction, 4 threads."""
    with common.fresh_database(args.database_url, folder, "raw") as url:
        db = migrated(url)
        try:
            rows = [span_rows(db, validated(mine)) for mine in events]
            turn = threading.Lock() if db.backend.name == "sqlite" else None
            return hammer([lambda mine=mine: RowCommitter(db, mine, turn) for mine in rows], args.single_sec, WARMUP)
        finally:
            db.dispose()


def service_single(args, lines: list[list[bytes]], folder: Path, probes: list[Run]) -> Run:
    """4 keep-alive clients POSTing one event each time; then GET /health by 4 clients, into `probes`."""
    with common.fresh_database(args.database_url, folder, "service") as url:
        with common.service({"DATABASE_URL": url}, folder) as server:
            before, began = common.worker_cpu(server), time.perf_counter()
            posted = hammer([lambda mine=mine: Poster(server, mine) for mine in lines], args.single_sec, WARMUP)
            cpu, elapsed = common.cpu_since(server, before), time.perf_counter() - began
            probes.append(hammer([lambda: Prober(server)] * CLIENTS, args.single_sec / 4, WARMUP))
    print(f"  single GET /health: {common.rate(probes[-1].rate)}/s", flush=True)
    cores = " + ".join(f"{seconds / elapsed:.2f}" for seconds in cpu)
    sent = len(posted.latencies) + CLIENTS * WARMUP
    return Run(posted.rate, sent / sum(cpu), f"(workers {cores} cores)", posted.latencies)


def latency(runs: list[Run], fraction: float) -> str:
    """The median over runs of each run's percentile."""
    return common.ms(statistics.median(common.percentile(run.latencies, fraction) for run in runs))


def single_part(args, folder: Path) -> Table:
    per_client = int(args.single_sec * 2_500) + WARMUP  # more than a client can send
    print(f"\nsingle: {CLIENTS} clients, {per_client:,} events each ready, {args.single_sec:g} s a run", flush=True)
    kernels = Kernels(seed=2)
    events = [kernels.take(HOSTS[n], per_client) for n in range(CLIENTS)]
    lines = [[encode(item) for item in mine] for mine in events]
    probes: list[Run] = []
    baselines, runs, around = interleaved(
        args.rounds, lambda: raw_single(args, events, folder), lambda: service_single(args, lines, folder, probes),
        "single",
    )  # fmt: skip
    raw = "raw psycopg" if common.is_postgres(args.database_url) else "raw sqlite3"
    rates = [run.rate for run in runs]

    def row(what: str, found: list[Run]) -> list[str]:
        return [what, spread([run.rate for run in found], common.rate), latency(found, 0.5), latency(found, 0.99)]

    median = statistics.median(rates)
    rows = [
        row(f"{raw}, 1 row a transaction, {CLIENTS} threads", baselines) + ["", ""],
        row(f"GET /health, {CLIENTS} keep-alive clients", probes) + ["", ""],
        row(f"service: POST 1 event, {CLIENTS} keep-alive clients", runs)
        + [f"target {TARGETS['single']:,.0f}/s: {verdict(median, TARGETS['single'])}", percent(median / 1000)],
        ["", "", "", "", "GET /health, same server", spread([r / p.rate for r, p in zip(rates, probes, strict=True)],
                                                               percent)],
        ["", "", "", "", f"{raw} (rounds around)", spread(ratios(runs, around), percent)],
        ["", "", "", "", "events per worker CPU-s", spread([run.per_cpu for run in runs], common.rate)],
    ]  # fmt: skip
    title = f"single: one event a POST, {args.single_sec:g} s a run; median (min-max) of {args.rounds} rounds"
    return title, ["what", "per s", "p50", "p99", "compared with", "ratio"], rows


# ---- summary: /spans/summary over 1,000,000 kernels --------------------------------------------------------

LOAD_EVENTS = 10_000  # a transaction, when loading in-process
FILTERS = {"no filter": {}, "host filter": {"host": HOSTS[0]}, "host+pid filter": {"host": HOSTS[0], "pid": PIDS[0]}}


def load_kernels(url: str, count: int) -> Counter[tuple[str, int]]:
    """`count` kernel events through the service's own write path, in-process, 10,000 a transaction.

    Returns how many each (host, pid) got, what the summaries must count."""
    db, began, group, done, loaded = migrated(url), time.perf_counter(), [], 0, Counter()
    try:
        for chunk in chunks(count, BATCH, seed=3):
            loaded.update((kernel["hostname"], kernel["pid"]) for kernel in chunk)
            group += chunk
            if len(group) < LOAD_EVENTS and done + len(group) < count:
                continue
            records, events = prepare_all([], validated(group))
            with db.writing() as conn:
                store_all(conn, records, events, time.time_ns())
            done, group = done + len(group), []
            if done % 200_000 == 0 or done == count:
                print(f"  loaded {done:,} / {count:,}, {done / (time.perf_counter() - began):,.0f}/s", flush=True)
    finally:
        db.dispose()
    return loaded


def expected(loaded: Counter[tuple[str, int]], query: dict[str, Any]) -> int:
    """How many of the loaded kernels a summary's host and pid filters match."""
    matched = (query.get("host", host) == host and query.get("pid", pid) == pid for host, pid in loaded)
    return sum(n for n, match in zip(loaded.values(), matched, strict=True) if match)


def path_of(query: dict[str, str]) -> str:
    return "/spans/summary" + ("?" + urllib.parse.urlencode(query) if query else "")


def time_http(server: common.Server, loaded: Counter[tuple[str, int]], repeat: int) -> dict[str, list[float]]:
    """GET /health and each summary round-robin on one keep-alive connection, after 2 untimed rounds."""
    paths = {"GET /health": "/health", **{name: path_of(query) for name, query in FILTERS.items()}}
    for name, query in FILTERS.items():
        found = sum(item["instances"] for item in common.get_json(server, paths[name])["items"])
        if found != expected(loaded, query):
            raise SystemExit(f"{paths[name]}: {found:,} kernels, not {expected(loaded, query):,}")
    took: dict[str, list[float]] = {name: [] for name in paths}
    conn = common.connect(server)
    try:
        for turn in range(repeat + 2):
            for name, path in paths.items():
                began = time.perf_counter()
                common.get_json(server, path, conn)
                if turn >= 2:
                    took[name].append(time.perf_counter() - began)
    finally:
        conn.close()
    return took


def time_summary(db: Database, query: dict[str, str], repeat: int) -> list[float]:
    """store.spans.summary in-process (its SQL and its Python, no HTTP), after one untimed call."""
    filters, took = span_store.SpanFilters(**query), []
    for turn in range(repeat + 1):
        began = time.perf_counter()
        with db.reading() as conn:
            span_store.summary(conn, filters)
        if turn:
            took.append(time.perf_counter() - began)
    return took


def captured(db: Database, query: dict[str, str]) -> list[tuple[str, Any]]:
    """The queries one summary sends to the driver, with their parameters, as SQLAlchemy sent them."""
    sent: list[tuple[str, Any]] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.reading() as conn:
            span_store.summary(conn, span_store.SpanFilters(**query))
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    return sent


def replay(db: Database, sent: list[tuple[str, Any]], repeat: int) -> tuple[list[float], list[float]]:
    """The statements alone on the driver, `repeat` times after one untimed: each round's total,
    and each statement's median."""
    raw = db.engine.raw_connection()
    totals, each = [], [[] for _ in sent]
    try:
        cursor = raw.driver_connection.cursor()
        for turn in range(repeat + 1):
            round_began = time.perf_counter()
            for n, (sql, params) in enumerate(sent):
                began = time.perf_counter()
                cursor.execute(sql, params)
                cursor.fetchall()
                if turn:
                    each[n].append(time.perf_counter() - began)
            raw.rollback()
            if turn:
                totals.append(time.perf_counter() - round_began)
        cursor.close()
    finally:
        raw.close()
    return totals, [statistics.median(times) for times in each]


def explain(db: Database, sql: str, params: Any) -> list[str]:
    """The plan of one statement: EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()
        if db.backend.name == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            lines = [f"{'  ' * (row[1] > 0)}{row[3]}" for row in cursor.fetchall()]
        else:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            lines = [row[0] for row in cursor.fetchall()]
        raw.rollback()
        cursor.close()
        return lines
    finally:
        raw.close()


def in_process(db: Database, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per filter: summary()'s times and its SQL's alone; prints its slowest statements and the plan of the first."""
    summary_times, sql_times = {}, {}
    for name, query in FILTERS.items():
        summary_times[name] = time_summary(db, query, repeat)
        sent = captured(db, query)
        sql_times[name], each = replay(db, sent, repeat)
        order = sorted(range(len(sent)), key=each.__getitem__, reverse=True)
        print(f"\n  summary, {name}: {len(sent)} statements, {common.ms(sum(each))} on the driver; the slowest:")
        for n in order[:3]:
            print(f"    {common.ms(each[n])}: {' '.join(sent[n][0].split())[:300]}  -- {sent[n][1]}")
        print("  its plan:")
        for line in explain(db, *sent[order[0]]):
            print(f"    {line}")
    return summary_times, sql_times


def summary_part(args, folder: Path) -> Table:
    count, postgres = args.summary_kernels, common.is_postgres(args.database_url)
    print(f"\nsummary: {count:,} kernel events loaded in-process (the service's write path)", flush=True)
    with common.fresh_database(args.database_url, folder, "summary") as url:
        loaded = load_kernels(url, count)
        if postgres:
            analyze_postgres(url)
        with common.service({"DATABASE_URL": url}, folder) as server:
            http = time_http(server, loaded, args.repeat)
        db = Database(url)
        try:
            summary_times, sql_times = in_process(db, args.repeat)
        finally:
            db.dispose()
        if args.profile:
            profile_summaries(url)
    health = statistics.median(http["GET /health"])

    def row(what: str, took: list[float], targeted: bool = True) -> list[str]:
        median = statistics.median(took)
        goal = f"< {common.ms(TARGETS['summary'])}: {verdict(median, TARGETS['summary'], higher=False)}"
        return [what, common.ms(median), common.ms(common.percentile(took, 0.9)), goal if targeted else "",
                percent(median / TARGETS["summary"]) if targeted else "", f"{median / health:.1f}x"]  # fmt: skip

    rows = [row("GET /health (HTTP)", http["GET /health"], targeted=False)]
    for name, query in FILTERS.items():
        rows.append(row(f"GET {path_of(query)} (HTTP)", http[name]))
    for name in FILTERS:
        rows.append(row(f"summary() in-process, {name}", summary_times[name]))
        rows.append(row(f"its SQL alone on the driver, {name}", sql_times[name], targeted=False))
    title = f"summary: {count:,} kernels ({len(NAMES)} names, {len(HOSTS)} hosts); median of {args.repeat}"
    return title, ["what", "median", "p90", "target", "median / target", "median / GET /health"], rows


# ---- profiles and main ---------------------------------------------------------------------------------------


def profile_summaries(url: str) -> None:
    def calls(client) -> None:
        for query in FILTERS.values():
            answer = client.get(path_of(query))
            assert answer.status_code == 200, answer.get_data()[:300]

    print("\ncProfile of each summary served once in-process (Flask test client):")
    common.profile_in_process(url, calls)


def profile_single(args, folder: Path, posts: int = 500) -> None:
    """cProfile of `posts` single-event POSTs served in-process, after as many untimed ones."""
    lines = iter([encode(item) for item in Kernels(seed=4).take(HOSTS[0], 2 * posts)])

    def calls(client) -> None:
        for _ in range(posts):
            answer = client.post("/metrics", data=next(lines), content_type="application/json")
            assert answer.status_code == 201, answer.get_data()[:300]

    print(f"\ncProfile of {posts} POSTs of one event, in-process (Flask test client):")
    with common.fresh_database(args.database_url, folder, "profile") as url:
        common.profile_in_process(url, calls)


PARTS: dict[str, Callable[[argparse.Namespace, Path], Table]] = {
    "batch": batch_part,
    "single": single_part,
    "summary": summary_part,
}


def parse_args() -> argparse.Namespace:
    parser = common.arguments(__doc__)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which, comma-separated ({','.join(PARTS)})")
    parser.add_argument("--events", type=int, default=1_000_000, help="batch: events POSTed per run (1000000)")
    parser.add_argument("--rounds", type=int, default=3, help="batch and single: rounds (3)")
    parser.add_argument("--single-sec", type=float, default=20.0, help="single: seconds a run (20)")
    parser.add_argument("--summary-kernels", type=int, default=1_000_000, help="summary: kernels loaded (1000000)")
    parser.add_argument("--repeat", type=int, default=20, help="summary: timed rounds (20), after untimed ones")
    parser.add_argument("--profile", action="store_true", help="cProfile single POSTs and summaries in-process")
    args = parser.parse_args()
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    common.header("bench/events.py")
    tables = []
    with tempfile.TemporaryDirectory(prefix="gpumetrics-events-") as tmp:
        for name in args.parts.split(","):
            tables.append(PARTS[name](args, Path(tmp)))
        if args.profile and "single" in args.parts.split(","):
            profile_single(args, Path(tmp))
    print()
    common.header(f"bench/events.py on {'PostgreSQL' if common.is_postgres(args.database_url) else 'SQLite'}, done")
    for title, columns, rows in tables:
        print(f"\n{title}")
        common.table(columns, rows)


if __name__ == "__main__":
    main()
