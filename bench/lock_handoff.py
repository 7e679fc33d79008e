"""Experiment: how two writer processes hand over SQLite's write lock.

    .venv/bin/python bench/lock_handoff.py [--records 200000] [--rounds 2]

Two processes stand in for the two gunicorn workers: each runs the service's own
write path in-process (json.loads, ingest.validate, db.writing() + store.insert)
over its half of the batches, as fast as it can, on one fresh SQLite file.

- "busy-timeout": the service as it is. A writer that finds the lock taken waits in
  SQLite's busy handler, which polls with sleeps of 1, 2, 5, 10, 15, 20, 25... ms,
  so the lock can sit free while the next writer still sleeps.
- "flock": the same, with each write transaction wrapped in fcntl.flock(LOCK_EX) on
  a file beside the database, so a waiting writer is woken by the kernel the moment
  the lock is released (what the suggested change to gpumetrics/db.py would do).

For each it prints records/s and the share of wall time each process spent waiting
for the lock (BEGIN IMMEDIATE for busy-timeout, flock for flock). Variants alternate
round by round so that a noisy neighbour hits them alike. Figures, not a test.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from _common import print_machine
from ingest import batches_of, make_records

import config
from gpumetrics import times


def writer(url: str, bodies: list[bytes], lock_path: str | None, start, out) -> None:
    from sqlalchemy import event

    from gpumetrics import create_app, ingest, store

    app = create_app(config.load({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}))
    db = app.extensions["gpumetrics"]["db"]
    waited = [0.0]
    began = [0.0]

    def before(_conn, _cursor, statement, *_args) -> None:
        if statement == "BEGIN IMMEDIATE":
            began[0] = time.perf_counter()

    def after(_conn, _cursor, statement, *_args) -> None:
        if statement == "BEGIN IMMEDIATE":
            waited[0] += time.perf_counter() - began[0]

    if lock_path is None:
        # Around the BEGIN IMMEDIATE of db.py's `begin` listener: the time it blocks.
        event.listen(db.engine, "before_cursor_execute", before)
        event.listen(db.engine, "after_cursor_execute", after)
    handle = open(lock_path, "a+") if lock_path else None  # noqa: SIM115
    start.wait()
    t0 = time.perf_counter()
    stored = 0
    for body in bodies:
        checked = ingest.validate(json.loads(body))
        if handle is not None:
            before = time.perf_counter()
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited[0] += time.perf_counter() - before
        try:
            with db.writing() as session:
                stored += store.insert(session, checked.records)[0]
        finally:
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elapsed = time.perf_counter() - t0
    db.dispose()
    out.put((stored, elapsed, waited[0]))


def run(bodies: list[bytes], batch: int, tmp: Path, name: str, use_flock: bool) -> tuple[float, list[float]]:
    db = tmp / f"{name}.db"
    url = f"sqlite:///{db}"
    from gpumetrics import create_app

    create_app(config.load({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"})).extensions["gpumetrics"]["db"].dispose()
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    halves = [bodies[0::2], bodies[1::2]]
    lock = str(db) + ".write.lock" if use_flock else None
    procs = [context.Process(target=writer, args=(url, half, lock, start, out)) for half in halves]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # both apps built
    t0 = time.perf_counter()
    start.set()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    stored = sum(r[0] for r in results)
    assert stored == len(bodies) * batch, stored
    return stored / wall, [r[2] / r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records per run (default 200000)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating (default 2)")
    args = parser.parse_args()
    print_machine()
    tmp = Path(tempfile.mkdtemp(prefix="gpumetrics-lock-"))
    rates: dict[str, list[float]] = {"busy-timeout": [], "flock": []}
    for number in range(args.rounds):
        for name in rates:
            base = (times.now_micros() // 1_000_000 - 100_000) * 1_000_000
            records = make_records(args.records, base)
            bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches_of(records, args.batch)]
            rate, waits = run(bodies, args.batch, tmp, f"{name}-{number}", name == "flock")
            rates[name].append(rate)
            share = ", ".join(f"{w:.0%}" for w in waits)
            print(f"  round {number + 1} {name:<13} {rate:>9,.0f} records/s; each process waited for the lock {share}")
    print("\n## Lock hand-over result (two writer processes, one SQLite file)")
    for name, values in rates.items():
        print(f"  {name:<13} {max(values):>9,.0f} records/s best, {min(values):,.0f} worst")
    ratio = max(rates["flock"]) / max(rates["busy-timeout"])
    print(f"  flock / busy-timeout (best of each): {ratio:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
