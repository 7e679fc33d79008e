"""Ingest: records/s POSTed through the real service, against the driver alone inserting the same rows.

    .venv/bin/python bench/ingest.py [--records 200000] [--rounds 3] [--tree PATH]... [--database-url URL]

Why: POST /metrics is the service's hot path. On this shared, noisy machine an absolute
rate says little, so every figure is also a ratio to the database doing the same
inserts alone, measured in the same run. Targets (issue): on SQLite ≥ 40,000 records/s
and ≥ 25 % of raw sqlite3; on PostgreSQL ≥ 30,000 records/s.

The service is gunicorn as tests/conftest.py starts it (2 workers, gthread), on a fresh
database per run. Two client threads POST bodies of 1000 records (all six kinds, 8
GPUs, none a duplicate), serialized before timing; the first 2 POSTs of each thread
are a warm-up. keep-alive: one connection per thread; new-connection: one per POST.
The baseline is common.RawWriter: the same rows, sqlite3 executemany (or psycopg COPY), one
transaction per 1000, into a fresh database with the service's schema and pragmas.

Runs are interleaved: each round measures the baseline, then every tree in every mode;
a last baseline closes the run. A run's ratio is to the mean of the baselines before
and after its round. `--tree` (repeatable) runs the service from other checkouts, e.g.
git worktrees of two commits, to compare them in one run. `--profile` adds a cProfile
of POSTs served in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import common

MODES = {"keep-alive": True, "new-connection": False}
WARMUP = 2  # POSTs per client thread before timing


def parse_args() -> argparse.Namespace:
    parser = common.arguments(__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records POSTed per run (200000)")
    parser.add_argument("--batch", type=int, default=1000, help="records per POST (1000)")
    parser.add_argument("--clients", type=int, default=2, help="client threads (2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every tree and mode (1)")
    parser.add_argument("--tree", type=Path, action="append", help="checkout to run the service from (this one)")
    parser.add_argument("--profile", type=int, default=0, metavar="POSTS", help="cProfile this many POSTs in-process")
    return parser.parse_args()


def post_all(server: common.Server, bodies: list[bytes], clients: int, keep_alive: bool) -> float:
    """POST every body from `clients` threads; records/s of all but the warm-up POSTs."""
    timed: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for data in bodies[clients * WARMUP :]:
        timed.put(data)
    ready, errors, stored = threading.Barrier(clients + 1), [], []

    def send(conn, data: bytes) -> None:
        fresh = conn if keep_alive else common.connect(server)
        stored.append(common.post(fresh, data, keep_alive)["stored"])
        if not keep_alive:
            fresh.close()

    def client(warm: list[bytes]) -> None:
        conn = common.connect(server)
        try:
            for data in warm:
                send(conn, data)
            ready.wait()
            while True:
                try:
                    data = timed.get_nowait()
                except queue.Empty:
                    return
                send(conn, data)
        except Exception as error:  # reported below: a thread's exception would vanish
            errors.append(error)
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(bodies[i * WARMUP : (i + 1) * WARMUP],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: said below
        ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors or len(stored) != len(bodies) or len(set(stored)) != 1:
        raise SystemExit(f"not every record was stored: {errors[:1]} {sorted(set(stored))}")
    return (len(bodies) - clients * WARMUP) * stored[0] / elapsed


@dataclass(frozen=True)
class Run:
    """One measurement: records/s, and records per CPU-second of the process(es) doing the work.

    The second is steadier on a shared machine: a neighbour takes wall time, less so CPU time.
    """

    rate: float
    per_cpu: float


def raw_rate(url: str, records: list[dict], batch: int) -> Run:
    """RawWriter inserting the records' rows, one transaction per batch."""
    writer = common.RawWriter(url)
    try:
        rows = writer.rows(records)
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(rows), batch):
            writer.insert(rows[start : start + batch])
        return Run(len(rows) / (time.perf_counter() - began), len(rows) / (time.process_time() - cpu))
    finally:
        writer.close()


def service_rate(args, root: Path, bodies: list[bytes], keep_alive: bool, folder: Path) -> tuple[Run, str]:
    """gunicorn started from `root`, on a fresh database; and the cores each worker used.

    gthread keeps a keep-alive connection on the worker that accepted it, and may give
    both clients' connections to one worker: the cores show when that happened.
    """
    with common.fresh_database(args.database_url, folder, "service") as url:
        env = {"DATABASE_URL": url, "MAX_BATCH": str(max(10_000, args.batch))}
        with common.service(env, folder, root=root) as server:
            before, began = common.worker_cpu(server), time.perf_counter()
            rate = post_all(server, bodies, args.clients, keep_alive)
            cpu, elapsed = common.cpu_since(server, before), time.perf_counter() - began
    cores = " + ".join(f"{seconds / elapsed:.2f}" for seconds in cpu)
    return Run(rate, len(bodies) * args.batch / sum(cpu)), cores


def measure(args, trees: list[Path], bodies: list[bytes], records: list[dict], folder: Path):
    """Baselines and service runs, interleaved: per round the baseline, then each mode of each tree.

    Returns the baselines (one more than rounds) and each (tree, mode)'s [(round, Run)].
    """
    baselines: list[Run] = []
    runs: dict[tuple[Path, str], list[tuple[int, Run]]] = {}

    def baseline() -> None:
        with common.fresh_database(args.database_url, folder, "raw") as url:
            baselines.append(raw_rate(url, records, args.batch))
        print(f"  baseline {common.rate(baselines[-1].rate)} records/s", flush=True)

    baseline()
    for number in range(args.rounds):
        for mode, keep_alive in MODES.items():
            for tree in trees:
                run, cores = service_rate(args, tree, bodies, keep_alive, folder)
                runs.setdefault((tree, mode), []).append((number, run))
                print(f"  {label(tree)}, {mode}: {common.rate(run.rate)} records/s, workers {cores} cores", flush=True)
        baseline()
    return baselines, runs


def label(tree: Path) -> str:
    """Which service a row is: its checkout's commit, and the checkout when it is not this one."""
    return common.commit_of(tree) + ("" if tree == common.ROOT else f" ({tree})")


def spread(values: list[float], text) -> str:
    """The median of the values, and their range when there are several."""
    middle = text(statistics.median(values))
    return middle if len(values) == 1 else f"{middle} ({text(min(values))}–{text(max(values))})"


def percent(value: float) -> str:
    return f"{value:.0%}"


def report(args, baselines: list[Run], runs: dict) -> None:
    """One row per service and client mode, each ratio to the baselines of its own round.

    On PostgreSQL the server's CPU is not counted, so records per CPU-s compare services only.
    """
    postgres = common.is_postgres(args.database_url)
    raw = "raw psycopg COPY" if postgres else "raw sqlite3 executemany"
    raw_cpu = ["", ""] if postgres else [spread([b.per_cpu for b in baselines], common.rate), "100%"]
    rows = [[raw, "", spread([b.rate for b in baselines], common.rate), "100%", *raw_cpu]]
    for (tree, mode), results in runs.items():
        around = {number: baselines[number : number + 2] for number, _ in results}
        rates = [run.rate / statistics.mean(b.rate for b in around[number]) for number, run in results]
        per_cpu = [run.per_cpu / statistics.mean(b.per_cpu for b in around[number]) for number, run in results]
        rows.append([label(tree), mode, spread([run.rate for _, run in results], common.rate), spread(rates, percent),
                     spread([run.per_cpu for _, run in results], common.rate),
                     "" if postgres else spread(per_cpu, percent)])  # fmt: skip
    per = f"median (min–max) of {args.rounds} rounds" if args.rounds > 1 else "one round"
    print(f"\n{args.records:,} records per run, {args.batch} per POST, {args.clients} clients; {per}")
    common.table(["service at", "clients", "records/s", "ratio", "records per CPU-s", "ratio"], rows)


def profile(args, bodies: list[bytes], folder: Path) -> None:
    """cProfile of --profile POSTs served in-process, after as many untimed ones."""
    feed = iter(bodies)

    def posts(client) -> None:
        for data in [next(feed) for _ in range(args.profile)]:
            answer = client.post("/metrics", data=data, content_type="application/json")
            assert answer.status_code == 201, answer.get_data()[:300]

    print(f"\ncProfile of {args.profile} POSTs of {args.batch} records, in-process (Flask test client):")
    with common.fresh_database(args.database_url, folder, "profile") as url:
        common.profile_in_process(url, posts)


def main() -> None:
    args = parse_args()
    common.header("bench/ingest.py")
    trees = [tree.resolve() for tree in args.tree or [common.ROOT]]
    api_items = common.items(args.records, common.recent_start(args.records))
    records = common.canonical(api_items)
    bodies = [common.body(api_items[i : i + args.batch]) for i in range(0, len(api_items), args.batch)]
    if len(bodies) < args.clients * WARMUP + 1 or 2 * args.profile > len(bodies):
        raise SystemExit("--records too small for the warm-up (or for twice --profile POSTs)")
    with tempfile.TemporaryDirectory(prefix="gpumetrics-ingest-") as tmp:
        baselines, runs = measure(args, trees, bodies, records, Path(tmp))
        if args.profile:
            profile(args, bodies, Path(tmp))
    report(args, baselines, runs)


if __name__ == "__main__":
    main()
