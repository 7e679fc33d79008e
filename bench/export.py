"""Export: every record streamed as NDJSON and as CSV through the real gunicorn, with the worker's memory watched.

    .venv/bin/python bench/export.py [--records 10000000] [--database-url URL]

Why: issue 12 says GET /metrics/export streams any amount "with memory flat": the worker's
RSS may grow by less than 100 MB over an export of 10 million records. The service runs
as deployed (tests/conftest.py's Server) with one worker, so that the worker's RSS is the
request's: VmRSS from /proc/<worker>/status before the export (after a warm-up request),
every 0.5 s during it, and after it; VmHWM (the kernel's high-water mark) is read too. The
client reads the body in 1 MiB pieces and counts bytes and lines, which must equal the
records (plus the CSV's header).

Rows/s get a same-run partner: the database driver alone reading the same rows in the
same order (records joined with their GPU, ORDER BY ts, id: the export's order), a
server-side cursor fetching 5000 at a time, nothing formatted. That is the floor the
service's pages, JSON or CSV and HTTP are added to.

The data is bench/compare.py's (records(n, end) of bench/victoria.py, loaded through the
service's write path): on SQLite its cached bench/data/compare-<records>-<end>.db is
reused (or built); with --database-url a scratch PostgreSQL database is loaded and dropped
(--keep: the one a `bench/compare.py --keep` run left there is reused, and left).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import common
import compare
from sqlalchemy.engine import make_url

TARGET_MB = 100.0
MB = 1_000_000
ORDERED = (
    "SELECT records.*, gpus.host, gpus.gpu_index, gpus.uuid, gpus.name FROM records "
    "JOIN gpus ON gpus.id = records.gpu_id ORDER BY records.ts, records.id"
)


def parse_args():
    parser = common.arguments(__doc__)
    parser.add_argument("--records", type=int, default=10_000_000, help="records in the database (10000000)")
    parser.add_argument("--keep", action="store_true", help="PostgreSQL: reuse (or leave) bench/compare.py's database")
    return parser.parse_args()


def driver_rows_per_second(url: str) -> float:
    """The partner: the driver alone reads every record in the export's order, 5000 at a time; rows/s."""
    began, count = time.perf_counter(), 0
    if common.is_postgres(url):
        with compare.postgres(url) as conn, conn.transaction(), conn.cursor(name="export") as cursor:
            cursor.itersize = 5000
            cursor.execute(ORDERED)
            while batch := cursor.fetchmany(5000):
                count += len(batch)
    else:
        with closing(sqlite3.connect(make_url(url).database)) as conn:
            cursor = conn.execute(ORDERED)
            while batch := cursor.fetchmany(5000):
                count += len(batch)
    return count / (time.perf_counter() - began)


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) * 1024 / MB for name in ("VmRSS", "VmHWM")}


class Sampler(threading.Thread):
    """VmRSS of one process every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(rss(self.pid)["VmRSS"])
            self._halt.wait(self.every)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join()
        return self.samples


def stream(server: common.Server, path: str) -> tuple[float, int, int]:
    """GET path, its body read in 1 MiB pieces: (seconds, bytes, lines)."""
    conn = common.connect(server, timeout=600)
    began, size, lines = time.perf_counter(), 0, 0
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {response.read(300)!r}")
        while piece := response.read(1 << 20):
            size += len(piece)
            lines += piece.count(b"\n")
    finally:
        conn.close()
    return time.perf_counter() - began, size, lines


def export(server: common.Server, fmt: str, records: int) -> dict[str, float]:
    """One export in `fmt`, with the only worker's RSS before, during and after; checks the line count."""
    (worker,) = server.worker_pids()
    common.get_json(server, "/metrics/latest")  # warm: the read path's imports, a connection
    stream(server, f"/metrics/export?format={fmt}&end=2000-01-01T00:00:00Z")  # warm: the export's, nothing in it
    before = rss(worker)["VmRSS"]
    sampler = Sampler(worker)
    sampler.start()
    seconds, size, lines = stream(server, f"/metrics/export?format={fmt}")
    during = sampler.stop()
    time.sleep(1)
    after = rss(worker)
    expected = records + (fmt == "csv")
    if lines != expected:
        raise SystemExit(f"format={fmt}: {lines:,} lines, not {expected:,}")
    print(f"  {fmt}: {lines:,} lines, {size:,} bytes in {seconds:.1f} s; RSS samples {len(during)}", flush=True)
    peak = max(during, default=before)
    return {"seconds": seconds, "bytes": size, "before": before, "peak": peak, **after}


def report(runs: dict[str, dict[str, float]], driver: float, records: int) -> None:
    """Per format: rows/s against the driver's, and the worker's RSS growth against 100 MB."""
    rows = []
    for fmt, run in runs.items():
        growth = max(run["peak"], run["VmRSS"]) - run["before"]
        per_second = records / run["seconds"]
        rows.append(
            [
                f"format={fmt}",
                f"{run['seconds']:.1f} s",
                f"{per_second:,.0f}",
                f"{per_second / driver:.2f}×",
                f"{run['bytes'] / 2**20:,.0f} MiB",
                f"{run['before']:.0f} / {run['peak']:.0f} / {run['VmRSS']:.0f} MB",
                f"{growth:.1f} MB",
                f"{growth / TARGET_MB:.2f}×",
                "met" if growth < TARGET_MB else "**missed**",
            ]
        )
    print(f"\n{records:,} records; driver alone (same rows, same order, nothing formatted): {driver:,.0f} rows/s")
    columns = ["export", "time", "rows/s", "× driver", "streamed", "RSS before / peak / after", "growth"]
    common.table([*columns, f"× {TARGET_MB:g} MB", ""], rows)
    print(
        "VmHWM (high-water mark since the worker started): "
        + ", ".join(f"{f} {r['VmHWM']:.0f} MB" for f, r in runs.items())
    )


def main() -> None:
    args = parse_args()
    common.header("bench/export.py")
    with (
        tempfile.TemporaryDirectory(prefix="gpumetrics-export-") as tmp,
        compare.service_data(args.database_url, args.records, args.keep) as (url, _, _),
    ):
        drivers = [driver_rows_per_second(url)]
        print(f"  driver alone: {drivers[0]:,.0f} rows/s", flush=True)
        runs = {}
        with common.service({"DATABASE_URL": url, "WORKERS": "1"}, Path(tmp)) as server:
            for fmt in ("ndjson", "csv"):
                runs[fmt] = export(server, fmt, args.records)
                print(f"  load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        drivers.append(driver_rows_per_second(url))
        print(f"  driver alone again: {drivers[1]:,.0f} rows/s", flush=True)
    report(runs, statistics.mean(drivers), args.records)


if __name__ == "__main__":
    main()
