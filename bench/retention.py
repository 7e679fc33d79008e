"""Retention: expired records purged by the service's own retention job while a client keeps POSTing.

    .venv/bin/python bench/retention.py [--expired 1000000] [--database-url URL]

Why: the issue asks how long purging 5 million rows takes and what the worst POST
latency is meanwhile. The purge deletes in bounded batches with pauses, so that POSTs
wait at most one batch; this measures both sides of that trade, and gives the POSTs'
latency during the purge against their latency after it, in the same run.

The data: --expired records from 2025 (common.load; 8 GPUs, all six kinds), cached as a
pristine SQLite file in bench/data/retention-<expired>.db (git-ignored; --expired
5000000 is the issue's size), copied for each run; then --young records of the last
hour on GPUs 0..6, so GPU 7 has only expired records and retention must forget it.
With --database-url both go to a scratch PostgreSQL database, dropped after.
gunicorn runs with METRICS_RETENTION_HOURS=24 and RETENTION_CLEAN_INTERVAL_SEC=86400:
retention runs once, at start. common.PostLoad POSTs from the moment the service
answers until --baseline-sec after /health reports the run. The purge's duration is
the run's finishedAt − startedAt; the POSTs sent within it are "during".
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import common

from gpumetrics import times


def parse_args() -> argparse.Namespace:
    parser = common.arguments(__doc__, baseline_sec=15)
    parser.add_argument("--expired", type=int, default=1_000_000, help="records older than retention (1000000)")
    parser.add_argument("--young", type=int, default=50_400, help="records of the last hour, GPUs 0..6 (50400)")
    return parser.parse_args()


def last_run(server: common.Server, timeout: float = 1800) -> dict:
    """Poll /health until the retention job has reported a run; that report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = common.get_json(server, "/health")["jobs"]["retention"]["lastRun"]
        if run:
            return run
        time.sleep(0.2)
    raise SystemExit(f"no retention run reported after {timeout:.0f} s")


def purge(args, url: str, folder: Path) -> dict:
    """Add the young records, start the service, and time its purge with POSTs running."""
    common.load(url, args.young, times.now_micros() - 3600 * common.SECOND, gpus=common.GPUS - 1)
    env = {"DATABASE_URL": url, "METRICS_RETENTION_HOURS": "24", "RETENTION_CLEAN_INTERVAL_SEC": "86400"}
    with common.service(env, folder) as server:
        load = common.PostLoad(server)
        load.start()
        run = last_run(server)
        time.sleep(args.baseline_sec)
        load.stop()
    began, ended = (times.parse_iso(run[key]) / common.SECOND for key in ("startedAt", "finishedAt"))
    if run["deleted"] != args.expired or run["gpusForgotten"] != 1 or load.failures:
        raise SystemExit(f"unexpected purge: {run}; POST failures {load.failures[:3]}")
    return {
        "seconds": ended - began,
        "batches": run["batches"],
        "during": load.latencies(began, ended),
        "after": load.latencies(begin=ended),
    }


def report(args, result: dict) -> None:
    kind = "PostgreSQL" if common.is_postgres(args.database_url) else "SQLite"
    seconds, during, after = result["seconds"], result["during"], result["after"]
    print(f"\n{kind}: {args.expired:,} expired records purged in {result['batches']} batches, {args.young:,} kept")
    common.table(
        ["figure", "during the purge", "baseline: after it", "ratio"],
        [
            ["purge duration", f"{seconds:.1f} s ({args.expired / seconds:,.0f} rows/s)", "", ""],
            ["POSTs", str(len(during)), str(len(after)), ""],
            *[
                [
                    name,
                    common.ms(common.percentile(during, q)),
                    common.ms(common.percentile(after, q)),
                    f"{common.percentile(during, q) / common.percentile(after, q):.1f}",
                ]
                for name, q in (("POST p50", 0.5), ("POST p99", 0.99), ("worst POST", 1.0))
            ],
        ],  # fmt: skip
    )


def main() -> None:
    args = parse_args()
    common.header("bench/retention.py")
    postgres = common.is_postgres(args.database_url)
    with tempfile.TemporaryDirectory(prefix="gpumetrics-retention-") as tmp:
        folder = Path(tmp)
        with common.fresh_database(args.database_url, folder, "retention") as url:
            if postgres:
                common.load(url, args.expired, common.PAST)
            else:
                pristine = common.cached_sqlite(f"retention-{args.expired}", args.expired, common.PAST)
                shutil.copyfile(pristine.removeprefix("sqlite:///"), url.removeprefix("sqlite:///"))
            result = purge(args, url, folder)
    report(args, result)


if __name__ == "__main__":
    main()
