"""Tail: a JSONL backlog caught up by the service's own tail job while a client keeps POSTing.

    .venv/bin/python bench/tail.py [--lines 1000000] [--subset 100000] [--database-url URL]

Why: the issue asks that a backlog of 1,000,000 lines be ingested at 50,000 lines/s or
more while the POSTs' p99 latency stays under 250 ms. Throughput is compared with the
same pipeline run in this process in the same run (records.jsonl.read_lines, then
store.write.prepare and store_records, one transaction per chunk, one thread, into a
fresh database), and latency with the POSTs' own p99 while there is no backlog.

The backlog (cached in bench/data/tail-<lines>.jsonl, git-ignored) is common.items, one
record per line, 8 GPUs of this host. gunicorn (2 workers) tails INPUT_WS_PATH, absent
at first, polling every 0.2 s. common.PostLoad POSTs 100 records every 50 ms, a new
connection each, so both workers serve POSTs. After --baseline-sec the backlog is
renamed into place and /health polled until the file is read to its end; then
--baseline-sec more. The pipeline runs on the first --subset lines before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import common

from gpumetrics.db import Database
from gpumetrics.records import jsonl
from gpumetrics.store.write import prepare, store_records


def parse_args() -> argparse.Namespace:
    parser = common.arguments(__doc__, baseline_sec=10)
    parser.add_argument("--lines", type=int, default=1_000_000, help="backlog lines (1000000)")
    parser.add_argument("--subset", type=int, default=100_000, help="lines of the in-process pipeline (100000)")
    return parser.parse_args()


def backlog(lines: int) -> Path:
    """The backlog file, generated once."""
    path = common.DATA / f"tail-{lines}.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(exist_ok=True)
    building = path.with_name(path.name + ".building")
    with open(building, "w", encoding="utf-8") as out:
        for done in range(0, lines, 100_000):
            part = common.items(min(100_000, lines - done), common.PAST, offset=done)
            out.writelines(json.dumps(item, separators=(",", ":")) + "\n" for item in part)
    os.replace(building, path)
    return path


def pipeline_rate(url: str, data: bytes) -> float:
    """Lines/s of the tailer's pipeline without the service around it: read, validate, prepare, store."""
    db = Database(url)
    db.upgrade()
    handle, read = io.BytesIO(data), 0
    try:
        began = time.perf_counter()
        for lines in jsonl.read_lines(handle, 0, True):
            batch = prepare(lines.records)
            with db.writing() as conn:
                store_records(conn, batch)
            read += lines.read
        return read / (time.perf_counter() - began)
    finally:
        db.dispose()


def caught_up(server: common.Server, key: str, lines: int, timeout: float = 900) -> dict:
    """Poll /health until the file is read to its end; its figures then."""
    conn = common.connect(server)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            figures = common.get_json(server, "/health", conn)["jobs"]["files"].get(key, {})
            if figures.get("linesRead") == lines and figures.get("bytesBehind") == 0:
                return figures
            time.sleep(0.1)
    finally:
        conn.close()
    raise SystemExit(f"not caught up after {timeout:.0f} s: {figures}")


def catch_up(args, url: str, source: Path, folder: Path) -> dict:
    """The service's catch-up on the backlog with POSTs running: lines/s and latencies."""
    target, staged = folder / "ws_out.jsonl", folder / "backlog.jsonl"
    shutil.copyfile(source, staged)  # beside the target: the rename is atomic
    env = {"DATABASE_URL": url, "ENABLE_WS_FILE": "true", "INPUT_WS_PATH": str(target), "FILE_POLL_INTERVAL_SEC": "0.2"}
    with common.service(env, folder) as server:
        load = common.PostLoad(server)
        load.start()
        time.sleep(args.baseline_sec)
        moved = time.time()
        os.rename(staged, target)
        figures = caught_up(server, str(target.absolute()), args.lines)
        done = time.time()
        time.sleep(args.baseline_sec)
        load.stop()
    if figures["recordsStored"] != args.lines or load.failures:
        raise SystemExit(f"not every record was stored: {figures}, POST failures {load.failures[:3]}")
    return {
        "rate": args.lines / (done - moved),
        "during": load.latencies(moved, done),
        "baseline": load.latencies(end=moved) + load.latencies(begin=done),
    }


def report(args, pipeline: list[float], result: dict) -> None:
    kind = "PostgreSQL" if common.is_postgres(args.database_url) else "SQLite"
    lines, base = result["rate"], statistics.mean(pipeline)
    during, calm = common.percentile(result["during"], 0.99), common.percentile(result["baseline"], 0.99)
    print(f"\n{kind}: {args.lines:,} lines through the service; the pipeline on {args.subset:,}, before and after")
    common.table(
        ["figure", "service", "baseline", "ratio", "target"],
        [
            [
                "catch-up, lines/s (baseline: the pipeline)",
                common.rate(lines),
                common.rate(base),
                f"{lines / base:.2f}",
                "≥ 50,000",
            ],
            ["POST p99 (baseline: no backlog)", common.ms(during), common.ms(calm), f"{during / calm:.1f}", "< 250 ms"],
        ],  # fmt: skip
    )
    print(f"pipeline before / after: {common.rate(pipeline[0])} / {common.rate(pipeline[1])} lines/s")
    print(
        f"POSTs during the catch-up: {len(result['during'])}, p50 / p99 / max", *common.latency_cells(result["during"])
    )


def pipeline_run(args, folder: Path, subset: bytes, when: str) -> float:
    with common.fresh_database(args.database_url, folder, f"pipeline_{when}") as url:
        result = pipeline_rate(url, subset)
    print(f"  pipeline ({when}): {common.rate(result)} lines/s", flush=True)
    return result


def main() -> None:
    args = parse_args()
    common.header("bench/tail.py")
    source = backlog(args.lines)
    with open(source, "rb") as handle:
        subset = b"".join(line for _, line in zip(range(args.subset), handle, strict=False))
    with tempfile.TemporaryDirectory(prefix="gpumetrics-tail-") as tmp:
        folder = Path(tmp)
        before = pipeline_run(args, folder, subset, "before")
        with common.fresh_database(args.database_url, folder, "service") as url:
            result = catch_up(args, url, source, folder)
        print(f"  service: {common.rate(result['rate'])} lines/s", flush=True)
        after = pipeline_run(args, folder, subset, "after")
    report(args, [before, after], result)


if __name__ == "__main__":
    main()
