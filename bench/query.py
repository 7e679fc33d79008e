"""Queries: the read endpoints over HTTP on a large database, against GET /health in the same run.

    .venv/bin/python bench/query.py [--records 1000000] [--repeat 20] [--database-url URL] [--profile]

Why: the issue sets targets for reads on a 10-million-record database (1 h average
20 ms, whole-history average 1 s, /stats of the last hour 100 ms, pages 30 ms). This
times exactly the requests a dashboard makes, through the real gunicorn, and gives
each as a multiple of GET /health (a request that does no real work), timed
round-robin with them so that a noisy neighbour hits all alike.

The data: 8 GPUs x 6 kinds, one record per second each, from 2025-01-01, loaded with
common.load (the service's own write path, as a POST). On SQLite it is
cached in bench/data/query-<records>.db (git-ignored) and rebuilt when the migrations
move on; --records 10000000 builds the issue's size (about 1 GiB, a few minutes).
With --database-url the same rows go to a scratch PostgreSQL database, dropped after.
The answers' counts are checked before timing. --profile adds a cProfile of each
query served once in-process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

import common

from gpumetrics import times

PER_SECOND = common.GPUS * len(common.KIND_NAMES)


def parse_args() -> argparse.Namespace:
    parser = common.arguments(__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the database (1000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds (20), after 2 untimed")
    parser.add_argument("--profile", action="store_true", help="cProfile each query once, in-process")
    return parser.parse_args()


def analyze_postgres(url: str) -> None:
    """What autovacuum would do in time: statistics for the planner, the visibility map."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def queries(records: int) -> dict[str, tuple[str, float | None]]:
    """Each request: its path and target in ms (None: the baseline)."""
    last = common.PAST + (records // PER_SECOND - 1) * common.SECOND
    hour = max(common.PAST, last - 3599 * common.SECOND)
    average = {"aggregate": "avg", "field": "gpuPercent", "metric": "utilization", "gpuIndex": 3}

    def at(path: str, **args) -> str:
        return f"{path}?{urllib.parse.urlencode(args)}" if args else path

    iso = times.to_iso
    return {
        "GET /health (baseline)": ("/health", None),
        "avg gpuPercent, GPU 3, last hour": (at("/metrics/aggregate", **average, start=iso(hour), end=iso(last)), 20),
        "avg gpuPercent, GPU 3, all": (
            at("/metrics/aggregate", **average, start=iso(common.PAST), end=iso(last)),
            1000,
        ),
        "/stats, GPU 3, last hour": (at("/stats", gpuIndex=3, start=iso(hour)), 100),
        "GET /metrics, first page": ("/metrics", 30),
        "GET /metrics, GPU 3 power": (at("/metrics", gpuIndex=3, metric="power"), 30),
    }


def check(server: common.Server, paths: list[str], records: int) -> None:
    """The answers count what the data holds: a wrong answer fast is no result."""
    seconds = records // PER_SECOND
    hour = min(3600, seconds)
    answers = [common.get_json(server, path) for path in paths]
    assert answers[1]["count"] == hour and answers[2]["count"] == seconds, (answers[1], answers[2])
    kinds = answers[3]["gpus"][0]["metrics"]
    assert len(answers[3]["gpus"]) == 1 and {m["count"] for m in kinds.values()} == {hour}, answers[3]
    assert all(len(page["items"]) == 1000 and page["next"] for page in answers[4:]), "short pages"


def time_all(server: common.Server, paths: list[str], repeat: int) -> list[list[float]]:
    """Seconds of each request, round-robin over one keep-alive connection, after 2 untimed rounds."""
    conn = common.connect(server)
    spent: list[list[float]] = [[] for _ in paths]
    try:
        for number in range(2 + repeat):
            for index, path in enumerate(paths):
                began = time.perf_counter()
                common.get_json(server, path, conn)
                if number >= 2:
                    spent[index].append(time.perf_counter() - began)
    finally:
        conn.close()
    return spent


def report(named: dict[str, tuple[str, float | None]], spent: list[list[float]], records: int) -> None:
    health = statistics.median(spent[0])
    rows = []
    for (name, (_, target)), values in zip(named.items(), spent, strict=True):
        middle = statistics.median(values)
        verdict = "" if target is None else ("met" if middle * 1000 <= target else "**missed**")
        goal = "" if target is None else f"{target:g} ms"
        rows.append([name, goal, common.ms(middle), common.ms(max(values)), f"{middle / health:.1f}×", verdict])
    print(f"\n{records:,} records; median and max of {len(spent[0])} rounds")
    common.table(["query", "target", "median", "max", "× /health", ""], rows)


def run(args, url: str, records: int) -> None:
    named = queries(records)
    paths = [path for path, _ in named.values()]
    with tempfile.TemporaryDirectory(prefix="gpumetrics-query-") as tmp:
        with common.service({"DATABASE_URL": url}, Path(tmp)) as server:
            check(server, paths, records)
            spent = time_all(server, paths, args.repeat)
    report(named, spent, records)
    if args.profile:
        print("\ncProfile of each query once, in-process (Flask test client):")
        common.profile_in_process(url, lambda client: [client.get(path) for path in paths[1:]])


def main() -> None:
    args = parse_args()
    common.header("bench/query.py")
    records = -(-args.records // PER_SECOND) * PER_SECOND  # whole seconds
    if not common.is_postgres(args.database_url):
        run(args, common.cached_sqlite(f"query-{records}", records, common.PAST), records)
        return
    with tempfile.TemporaryDirectory() as tmp, common.fresh_database(args.database_url, Path(tmp), "query") as url:
        print(f"loading {records:,} records into a scratch PostgreSQL database", flush=True)
        common.load(url, records, common.PAST)
        analyze_postgres(url)
        run(args, url, records)


if __name__ == "__main__":
    main()
