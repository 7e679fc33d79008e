"""Tail benchmark: catching up on a 1,000,000-line JSONL backlog while a client keeps POSTing.

    .venv/bin/python bench/tail.py [--lines 1000000] [--database-url URL] [--py-spy]

Targets (from the issue): the backlog is ingested at 50,000 lines/s or more, and the
POSTs' p99 latency during the catch-up stays under 250 ms.

1. Generates (once; cached in bench/data/, git-ignored) a JSONL file of `--lines`
   canonical records, one per line: 8 GPUs x all six kinds x one per second, every
   record distinct. A copy of it is put beside the file the service will tail.
2. Starts the real gunicorn (2 workers) with ENABLE_WS_FILE=true, INPUT_WS_PATH naming
   a file that does not exist yet, METRICS_RETENTION_HOURS=0, FILE_POLL_INTERVAL_SEC=0.2.
3. A client POSTs `--post-batch` fresh records every `--post-interval` seconds (a new
   connection per POST by default, so both workers get POSTs). First `--baseline-sec`
   seconds with no backlog: the baseline latency.
4. Moves the copy into place (os.rename) and polls /health until the file shows
   linesRead == --lines and bytesBehind == 0: lines/s from the rename to then, and the
   POST latency p50/p99/max of the POSTs sent meanwhile. Then another baseline.
5. The throughput baseline: the in-process pipeline on the first `--subset` lines, in
   1 MiB chunks like the tailer (ingest.decode_lines + store.prepare + store.insert, one
   transaction per chunk, one thread) into a fresh database of the same kind.

With --database-url (a PostgreSQL URL) the service and the in-process baseline each
get a database of their own on that server, created and dropped by the benchmark.
--by-worker pins one keep-alive client to each worker and reports latency per worker
(the one running the tail job, and the other); --py-spy samples the workers during the
catch-up; --experiment NAME=VALUE runs bench/experiment.py (a proposed change on trial).
Figures are printed; this is not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
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
    cached,
    cores_text,
    create_schema,
    health_jobs,
    insert_frames,
    latency_text,
    percentile,
    pinned_clients,
    print_machine,
    spy_label,
)

from gpumetrics import times

TARGET_RATE = 50_000  # lines/s
TARGET_P99 = 0.250  # seconds
FORMAT = 1  # bump when the generated lines change
GPUS = 8
KINDS = ("memory", "utilization", "temperature", "power", "clocks", "process")
BASE_US = times.parse_iso("2025-06-01T00:00:00Z")


# ---- the backlog ------------------------------------------------------------------


def lines_of_second(second: int) -> list[str]:
    """The 48 lines of one second: each GPU's six kinds (no host: this host's GPUs)."""
    stamp = times.to_iso(BASE_US + second * 1_000_000)
    out = []
    for gpu in range(GPUS):
        i = second * GPUS + gpu
        head = f'{{"timestamp":"{stamp}","gpuIndex":{gpu},"metric":'
        used = (i * 37) % 40960
        out.append(f'{head}"memory","totalMiB":40960,"usedMiB":{used},"freeMiB":{40960 - used}}}\n')
        out.append(f'{head}"utilization","gpuPercent":{i % 101},"memoryPercent":{(i * 7) % 101}}}\n')
        out.append(f'{head}"temperature","celsius":{40 + i % 45}}}\n')
        out.append(f'{head}"power","watts":{100 + (i % 1000) / 10}}}\n')
        out.append(f'{head}"clocks","graphicsMHz":1410,"memoryMHz":1215,"smMHz":1410}}\n')
        out.append(f'{head}"process","pid":{1000 + gpu},"usedMiB":{2048 + i % 512},"processName":"python"}}\n')
    return out


def ensure_backlog(path: Path, lines: int) -> None:
    wanted = {"format": FORMAT, "lines": lines, "base_us": BASE_US}
    began = time.perf_counter()

    def make() -> None:
        building = path.with_name(path.name + ".building")
        written = second = 0
        with open(building, "w", encoding="ascii") as out:
            while written < lines:
                block = []
                for _ in range(1000):
                    block += lines_of_second(second)
                    second += 1
                block = block[: lines - written]
                out.write("".join(block))
                written += len(block)
        os.replace(building, path)

    if cached(path, wanted, make):
        print(f"reusing {path.relative_to(ROOT)} ({path.stat().st_size / 2**20:.0f} MiB)")
    else:
        took, size = time.perf_counter() - began, path.stat().st_size / 2**20
        print(f"generated {path.relative_to(ROOT)}: {lines:,} lines, {size:.0f} MiB in {took:.1f} s")


def chunks(data: bytes, size: int) -> list[bytes]:
    """`data` cut into pieces of at most `size` bytes, each ending with a newline (as the tailer reads)."""
    out, start = [], 0
    while start < len(data):
        piece = data[start : start + size]
        end = piece.rfind(b"\n") + 1
        out.append(piece[:end])
        start += end
    return out


# ---- in-process throughput baseline -----------------------------------------------------


def pipeline_rate(url: str, data: bytes) -> dict:
    """decode_lines + prepare + insert, one transaction per tailer chunk, one thread."""
    from gpumetrics import ingest, store
    from gpumetrics.db import Database
    from gpumetrics.jobs.tail import CHUNK_BYTES

    create_schema(url)
    db = Database(url)
    spent = {"decode": 0.0, "prepare": 0.0, "insert": 0.0}
    lines = stored = 0
    try:
        began = time.perf_counter()
        for chunk in chunks(data, CHUNK_BYTES):
            t0 = time.perf_counter()
            decoded = ingest.decode_lines(chunk)
            t1 = time.perf_counter()
            prepared = store.prepare(decoded.records)
            t2 = time.perf_counter()
            with db.writing() as session:
                stored += store.insert(session, prepared)[0]
            t3 = time.perf_counter()
            spent["decode"] += t1 - t0
            spent["prepare"] += t2 - t1
            spent["insert"] += t3 - t2
            lines += decoded.read
            assert not decoded.rejected, decoded.rejected[:3]
        elapsed = time.perf_counter() - began
    finally:
        db.dispose()
    assert stored == lines, (stored, lines)
    return {"rate": lines / elapsed, "lines": lines, "elapsed": elapsed, **spent}


# ---- through the service ------------------------------------------------------------------


def wait_caught_up(server: Server, key: str, lines: int, timeout: float, every: float = 0.1) -> tuple[float, dict]:
    """Poll /health until the file is fully read; (perf_counter when seen, its figures)."""
    conn = server.connection(timeout=60)
    deadline = time.perf_counter() + timeout
    last = {}
    try:
        while time.perf_counter() < deadline:
            files = health_jobs(server, conn)["files"]
            last = files.get(key) or {}
            if last.get("linesRead") == lines and last.get("bytesBehind") == 0:
                return time.perf_counter(), last
            time.sleep(every)
    finally:
        conn.close()
    raise SystemExit(f"not caught up after {timeout:.0f} s: {last}")


def spy_start(server: Server, out: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        print("(py-spy not installed: .venv/bin/pip install py-spy==0.4.3)")
        return None
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--idle", "--nonblocking"]
    command += ["--format", "raw", "--rate", "100", "--output", str(out), "--duration", "600", "--threads"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    return process


# Where a thread is, by the first of these frames found in its stack.
SPY_CATEGORIES = (
    ("waiting for SQLite's write lock (BEGIN IMMEDIATE)", "_sqlite_begin ("),
    ("waiting for a PostgreSQL advisory lock", "lock_hosts ("),
    ("COMMIT", "do_commit ("),
    ("the INSERT (sqlite3 executemany / PostgreSQL COPY)", insert_frames()),
    ("store.insert (filling in GPU ids)", "insert (gpumetrics/store.py"),
    ("store.resolve_gpus", "resolve_gpus ("),
    ("store.prepare", "prepare (gpumetrics/store.py"),
    ("ingest.decode_lines / validate", "decode_lines ("),
    ("ingest.validate", "validate (gpumetrics/ingest.py"),
    ("save_checkpoint", "save_checkpoint ("),
    ("reading the file", "_consume ("),
    ("reading and parsing the body", "_parse_body ("),
)


def spy_report(process: subprocess.Popen, out: Path) -> None:
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    if not out.exists():
        print(f"  py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}")
        return
    groups = {"tail job thread": "tail (gpumetrics/scheduler.py", "request threads": "handle_request ("}
    counts: dict[str, dict[str, int]] = {group: {} for group in groups}
    for line in out.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        group = next((g for g, frame in groups.items() if frame in stack), None)
        if group is None:
            continue
        label = spy_label(stack, SPY_CATEGORIES, "the rest (Flask, gunicorn, ...)")
        counts[group][label] = counts[group].get(label, 0) + int(number)
    for group, by_label in counts.items():
        total = sum(by_label.values())
        print(f"\n## py-spy during the catch-up: {group} ({total:,} samples, wall time, idle included)")
        for label, number in sorted(by_label.items(), key=lambda item: -item[1]):
            print(f"  {label:<52} {number / total:6.1%}")


def run_service(args, url: str, backlog: Path, tmp: Path) -> dict:
    target = tmp / "ws_out.jsonl"
    staged = tmp / "backlog.jsonl"
    shutil.copyfile(backlog, staged)  # same folder as the target: the rename is atomic
    env = {
        "DATABASE_URL": url,
        "WORKERS": str(args.workers),
        "ENABLE_WS_FILE": "true",
        "INPUT_WS_PATH": str(target),
        "ENABLE_MSG_FILE": "false",
        "METRICS_RETENTION_HOURS": "0",
        "FILE_POLL_INTERVAL_SEC": str(args.poll),
        "MAX_BATCH": "10000",
        **{f"BENCH_{item.partition('=')[0].upper()}": item.partition("=")[2] for item in args.experiment},
    }
    app = "bench.experiment:app" if args.experiment else "wsgi:app"
    if args.experiment:
        print(f"  experiment: bench/experiment.py with {', '.join(args.experiment)}")
    print(f"service: gunicorn WORKERS={args.workers}, tailing {target} (absent), {url.split('@')[-1]} ...", flush=True)
    with Server(env, tmp, app=app) as server:
        key = str(target)
        if args.by_worker:
            pinned = pinned_clients(server, args.post_interval, args.post_batch)
            clients = {f"pid {pid}": client for pid, client in pinned.items()}
            if len(clients) < 2:
                raise SystemExit(f"could not pin a connection to each worker: {list(clients)}")
        else:
            client = PostClient(
                server, batch=args.post_batch, interval=args.post_interval, reconnect=not args.keep_alive
            )
            for _ in range(5):  # warm-up: every worker has served a POST
                client.post_once(None)
            clients = {"client": client}
        for client in clients.values():
            client.samples.clear()
            client.start()
        time.sleep(args.baseline_sec)
        before_end = time.perf_counter()
        spy = spy_start(server, tmp / "py-spy.txt") if args.py_spy else None
        meter = CpuMeter(server).start()
        moved = time.perf_counter()
        os.rename(staged, target)
        done, figures = wait_caught_up(server, key, args.lines, args.timeout)
        cpu = meter.stop()
        if spy is not None:
            spy_report(spy, tmp / "py-spy.txt")
        time.sleep(args.baseline_sec)
        for client in clients.values():
            client.stop()
        jobs = health_jobs(server)
    runner = jobs["runners"].get("tail") or ""
    failures = [failure for client in clients.values() for failure in client.failures]
    if failures:
        print(f"  !! {len(failures)} POSTs failed, e.g. {failures[:3]}")
    if args.by_worker:
        print("\n## POST latency by worker (one keep-alive client pinned to each)")
        for label, client in clients.items():
            role = "runs the tail job" if runner.endswith(f":{label.split()[1]}") else "serves requests only"
            print(f"  worker {label} ({role})")
            print(f"    baseline before: {latency_text(client.latencies(end=before_end))}")
            print(f"    during catch-up: {latency_text(client.latencies(moved, done))}")
            print(f"    baseline after:  {latency_text(client.latencies(begin=done))}")
    before = [x for c in clients.values() for x in c.latencies(end=before_end)]
    during = [x for c in clients.values() for x in c.latencies(moved, done)]
    after = [x for c in clients.values() for x in c.latencies(begin=done)]
    return {
        "elapsed": done - moved,
        "rate": args.lines / (done - moved),
        "figures": figures,
        "cpu": cpu,
        "before": before,
        "during": during,
        "after": after,
        "posted": sum(client.stored for client in clients.values()),
        "failures": len(failures),
        "runner": runner,
    }


BACKLOG_COUNT = "SELECT count(*) FROM records JOIN gpus ON gpus.id = records.gpu_id WHERE gpus.host = ''"


def count_backlog(url: str) -> int:
    """Records of this host's GPUs (no host): the backlog's; the POSTs name a host."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        try:
            return conn.execute(BACKLOG_COUNT).fetchone()[0]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(admin_dsn(url)) as conn:
        return conn.execute(BACKLOG_COUNT).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="backlog lines (default 1000000)")
    parser.add_argument("--subset", type=int, default=100_000, help="lines of the in-process baseline (100000)")
    parser.add_argument("--post-batch", type=int, default=100, help="records per POST (default 100)")
    parser.add_argument("--post-interval", type=float, default=0.05, help="seconds between POSTs (default 0.05)")
    parser.add_argument("--keep-alive", action="store_true", help="one keep-alive connection (one worker gets all)")
    parser.add_argument("--baseline-sec", type=float, default=10.0, help="baseline before and after (default 10)")
    parser.add_argument("--poll", type=float, default=0.2, help="FILE_POLL_INTERVAL_SEC (default 0.2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn WORKERS (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (600)")
    parser.add_argument("--database-url", help="a PostgreSQL server URL; databases of our own are made there")
    parser.add_argument("--py-spy", action="store_true", help="sample the workers during the catch-up")
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run bench/experiment.py's app with BENCH_NAME=VALUE (a proposed change on trial); repeatable",
    )
    parser.add_argument(
        "--by-worker",
        action="store_true",
        help="one keep-alive client pinned to each worker, latency reported per worker (job runner or not)",
    )
    args = parser.parse_args()

    print_machine()
    backlog = ROOT / "bench" / "data" / f"tail-{args.lines}.jsonl"
    ensure_backlog(backlog, args.lines)
    with open(backlog, "rb") as handle:
        subset = b"".join(line for _, line in zip(range(args.subset), handle, strict=False))

    tmp = Path(tempfile.mkdtemp(prefix="gpumetrics-tail-"))
    postgres = args.database_url is not None and not args.database_url.startswith("sqlite")
    kind = "PostgreSQL" if postgres else "SQLite"
    try:

        def baseline(when: str) -> dict:
            print(f"in-process pipeline on {args.subset:,} lines, {kind} ({when}) ...", flush=True)
            if postgres:
                with ScratchPostgres(args.database_url, "tailbase") as scratch:
                    result = pipeline_rate(scratch.url, subset)
            else:
                path = tmp / f"pipeline-{when}.db"
                result = pipeline_rate(f"sqlite:///{path}", subset)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            print(f"  {result['rate']:,.0f} lines/s")
            return result

        base_before = baseline("before")
        if postgres:
            with ScratchPostgres(args.database_url, "tail") as scratch:
                result = run_service(args, scratch.url, backlog, tmp)
                count = count_backlog(scratch.url)
        else:
            url = f"sqlite:///{tmp / 'service.db'}"
            result = run_service(args, url, backlog, tmp)
            count = count_backlog(url)
        base_after = baseline("after")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    pipe = (base_before["rate"] + base_after["rate"]) / 2
    per_line = {
        name: (base_before[name] + base_after[name]) / (base_before["lines"] * 2) * 1e6
        for name in ("decode", "prepare", "insert")
    }
    figures = result["figures"]
    baseline_lat = result["before"] + result["after"]
    p99_base = percentile(baseline_lat, 0.99)
    p99_during = percentile(result["during"], 0.99)
    rate_ok = "MET" if result["rate"] >= TARGET_RATE else "MISSED"
    p99_ok = "MET" if p99_during < TARGET_P99 else "MISSED"

    print(f"\n## Tail result ({kind}, {args.lines:,} lines)")
    print(f"  file after the catch-up: {figures}; tail job run by {result['runner']}")
    print(f"  backlog records in the database: {count:,} of {args.lines:,}; POSTs stored {result['posted']:,}")
    assert figures["recordsStored"] == args.lines and figures["linesRejected"] == 0, figures
    assert count == args.lines, (count, args.lines)
    print(
        f"  in-process pipeline (baseline)  {pipe:>9,.0f} lines/s  (before {base_before['rate']:,.0f}, after "
        f"{base_after['rate']:,.0f}; per line: decode {per_line['decode']:.1f} us, prepare "
        f"{per_line['prepare']:.1f} us, insert {per_line['insert']:.1f} us)"
    )
    print(
        f"  catch-up through the service    {result['rate']:>9,.0f} lines/s  = {result['rate'] / pipe:.2f} x the "
        f"pipeline  ({result['elapsed']:.2f} s)   [>= {TARGET_RATE:,}/s: {rate_ok}]"
    )
    print(f"    CPU during the catch-up: {cores_text(result['cpu'])}")
    print(f"  POST latency, baseline before: {latency_text(result['before'])}")
    print(f"  POST latency, baseline after:  {latency_text(result['after'])}")
    print(f"  POST latency, during catch-up: {latency_text(result['during'])}")
    print(
        f"  p99 during {p99_during * 1e3:.1f} ms = {p99_during / p99_base:.1f} x the baseline p99 "
        f"{p99_base * 1e3:.1f} ms (before and after pooled)   [< {TARGET_P99 * 1e3:.0f} ms: {p99_ok}]"
    )
    if result["failures"]:
        print(f"  !! {result['failures']} POSTs failed")


if __name__ == "__main__":
    main()
