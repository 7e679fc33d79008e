"""VictoriaMetrics beside the service: the same records, loaded and asked the same questions.

    .venv/bin/python bench/victoria.py [--records 1000000] [--repeat 20]

Why: bench/compare.py times the service against a purpose-built time-series database on
the same data. This module is the VictoriaMetrics half: `records()` makes the data set
(the service's record dicts, deterministic), `Victoria` runs a throw-away server,
`Victoria.import_records()` loads the same rows, and one helper per paired query times
one HTTP request. `Truth` computes every answer in Python from the rows as they stream
past, and `__main__` checks each query against it before timing: a fast wrong answer
is no result.

Decisions, measured here (Debian's victoria-metrics 1.79.5+ds1, 2 shared cores):
- Import: /api/v1/import JSON lines, one line per series and batch of 100,000 rows with
  arrays of values and timestamps, spooled to a file (memory stays at one batch) and sent
  in one POST, so the load time is the server's, not Python's. On 1M records it beat the
  other formats on every count: body 35 MB, POST + flush 1.1 s, server 1.2 CPU-s; CSV
  (one request per kind: the process kind's pid label differs) 37 MB, 1.8 s; Prometheus
  text 127 MB, 2.6 s, 1.7 CPU-s. The same 2.3 MB on disk from each.
- Size on disk: in 1.79 /internal/force_flush makes samples searchable in in-memory parts
  that are not yet files (7 KB on disk for 100,000 records); merge() forces the merge
  and waits for it, then bytes_on_disk() sums every file under -storageDataPath.
- Windows: a point at time t covers (t - window, t] (checked: a window ending exactly on
  a minute puts the minute's first second in the previous point). Every query here is
  evaluated at X - 1 ms, so it covers [X - window, X): the service's epoch-aligned
  bucket [m, m + step) when X = m + step, for any millisecond timestamp.
- -search.disableCache: with the cache on, query_range rounds start and end down to a
  multiple of step (from 50 points on), so each point covers (m - step, m], one second
  off, and the last bucket is lost; and 20 repeats would time the response cache.
  (nocache=1 per request does the same.)

The paired questions, each one request, answered per series (the service groups by GPU
and kind): (a) avg gpuPercent of GPU 0 over the whole range: instant avg_over_time over
[first, end); (b, c) avg gpuPercent of the 8 GPUs per minute over the last 6 h, per hour
over the whole range: query_range of avg_over_time; (d) the newest value and its time of
every series: last_over_time and tlast_over_time over the last 5 minutes before `end`
(the service has no window: a GPU silent for longer is in its answer, not in this one);
(e) min, max, avg, last, count, first and last time of every series over the last hour:
one aggr_over_time(...) keep_metric_names. A VictoriaMetrics value is a float64.

Measured 2026-12-03 (load average 5 on 2 cores: medians of 20, noisy): 10M records loaded
in 10.9 s (920,000/s, 6.3 server CPU-s), 2.06 bytes a record on disk (1M: 2.29); medians
(a) 11.5 ms, (b) 11.0 ms, (c) 43.9 ms, (d) 7.9 ms, (e) 21.0 ms.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import requests

HOST = "bench-host"
GPUS = 8
KINDS = {
    "memory": ("totalMiB", "usedMiB", "freeMiB"),
    "utilization": ("gpuPercent", "memoryPercent"),
    "temperature": ("celsius",),
    "power": ("watts",),
    "clocks": ("graphicsMHz", "memoryMHz"),
    "process": ("pid", "usedMiB"),
}
PER_SECOND = GPUS * len(KINDS)  # records per second: 48
FLAGS = (
    "-retentionPeriod=100y",  # keep every sample, however old
    "-loggerLevel=ERROR",  # quiet
    "-search.latencyOffset=0s",  # an instant at or near now is not moved 30 s back
    "-search.disableCache",  # no response cache, no rounding of query_range start/end (module docstring)
    "-search.noStaleMarkers",  # the data has no Prometheus stale markers: do not look for them
)  # left at their defaults: -dedup.minScrapeInterval=0 (no deduplication), -precisionBits=64 (lossless)
STATS = ("min_over_time", "max_over_time", "avg_over_time", "last_over_time", "count_over_time")
TIMES = ("tfirst_over_time", "tlast_over_time")
Key = tuple  # a series: (kind, field, host, gpu, pid or None)
EVERY = '{__name__=~"gpu_.*"}'  # every series
MEASURED = '{__name__=~"gpu_.*",__name__!="gpu_process_pid"}'  # without the pid, which the service does not aggregate


# ---- the data ---------------------------------------------------------------------------------------


def sample(gpu: int, second: int) -> dict[str, dict[str, int | float]]:
    """Every kind's fields of one GPU at one epoch second: a fixed hash of both, the same in any run."""
    h = (second * 2654435761 + gpu * 2246822519) & 0xFFFFFFFF
    h ^= h >> 13
    used = 1024 + h % 79872
    return {
        "memory": {"totalMiB": 81920, "usedMiB": used, "freeMiB": 81920 - used},
        "utilization": {"gpuPercent": h % 101, "memoryPercent": (h >> 7) % 101},
        "temperature": {"celsius": 30 + (h >> 11) % 56},
        "power": {"watts": 60 + (h >> 5) % 1400 * 0.25},
        "clocks": {"graphicsMHz": 210 + (h >> 9) % 120 * 15, "memoryMHz": 1593},
        "process": {"pid": 4000 + gpu, "usedMiB": used - 512},
    }


def hour_start() -> int:
    """The start of the current UTC hour, in epoch seconds: the default end of the data."""
    return int(time.time()) // 3600 * 3600


def span(n: int) -> int:
    """Seconds that n records cover (the first may be partial)."""
    return -(-n // PER_SECOND)


def records(n: int, end: int | None = None) -> Iterator[dict[str, Any]]:
    """The benchmark's n records, oldest first: every kind of each GPU each second of [end - span(n), end).

    The first second is the partial one, so every series ends at end - 1. end: epoch seconds, default
    hour_start(). Each record is the service's dict: timestamp (ISO 8601, Z), gpuIndex, host, metric, fields.
    """
    end = hour_start() if end is None else end
    skip = span(n) * PER_SECOND - n
    for second in range(end - span(n), end):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        for gpu in range(GPUS):
            for metric, fields in sample(gpu, second).items():
                if skip:
                    skip -= 1
                    continue
                yield {"timestamp": stamp, "gpuIndex": gpu, "host": HOST, "metric": metric, **fields}


def millis(iso: str) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC when it has no offset)."""
    moment = datetime.fromisoformat(iso)
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def name(kind: str, field: str) -> str:
    """The VictoriaMetrics metric name of a field: gpu_<kind>_<field>."""
    return f"gpu_{kind}_{field}"


def key_of(metric: dict[str, str]) -> Key:
    """The series of a VictoriaMetrics answer's labels."""
    _, kind, field = metric["__name__"].split("_", 2)
    pid = int(metric["pid"]) if "pid" in metric else None
    return kind, field, metric.get("host", ""), int(metric["gpu"]), pid


def json_lines(rows: Iterable[dict[str, Any]], batch: int = 100_000) -> Iterator[bytes]:
    """Rows as /api/v1/import JSON lines: per batch of rows, one line per series with its values and timestamps."""
    series: dict[Key, tuple[list, list]] = {}
    stamp, ms = None, 0
    for number, row in enumerate(rows, 1):
        if row["timestamp"] != stamp:
            stamp, ms = row["timestamp"], millis(row["timestamp"])
        kind = row["metric"]
        pid = row["pid"] if kind == "process" else None
        for field in KINDS[kind]:
            values, stamps = series.setdefault((kind, field, row.get("host") or "", row["gpuIndex"], pid), ([], []))
            values.append(row[field])
            stamps.append(ms)
        if number % batch == 0:
            yield encode(series)
            series = {}
    if series:
        yield encode(series)


def encode(series: dict[Key, tuple[list, list]]) -> bytes:
    """One JSON line per series: {"metric": labels, "values": [...], "timestamps": [...]}."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    lines = []
    for (kind, field, host, gpu, pid), (values, stamps) in series.items():
        labels = {"__name__": name(kind, field), "host": host, "gpu": str(gpu)}
        if pid is not None:
            labels["pid"] = str(pid)
        lines.append(f'{{"metric":{dumps(labels)},"values":{dumps(values)},"timestamps":{dumps(stamps)}}}\n')
    return "".join(lines).encode()


def at(second: float) -> str:
    """The query instant 1 ms before `second`: a window ending there covers [second - window, second)."""
    return f"{second - 0.001:.3f}"


# ---- the server ---------------------------------------------------------------------------------------


def version(binary: str) -> str:
    """`victoria-metrics -version`, or the Debian package's version when the build left it empty (Debian's does)."""
    out = subprocess.run([binary, "-version"], capture_output=True, text=True).stdout.strip()
    if out:
        return out
    package = ["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"]
    deb = subprocess.run(package, capture_output=True, text=True).stdout.strip()
    return f"victoria-metrics {deb} (Debian package; -version prints nothing)" if deb else "unknown"


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Victoria:
    """A throw-away single-node VictoriaMetrics on 127.0.0.1: a free port and a temporary data dir, removed on exit."""

    def __init__(self, binary: str | None = None, flags: tuple[str, ...] = FLAGS):
        self.binary = binary or shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        self.flags = flags
        self.version = version(self.binary)
        self.session = requests.Session()

    def __enter__(self) -> Victoria:
        """Start the server and wait for /health."""
        self.dir = tempfile.mkdtemp(prefix="gpumetrics-victoria-")
        self.data = os.path.join(self.dir, "data")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(os.path.join(self.dir, "log"), "wb")
        command = [self.binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={self.data}", *self.flags]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_healthy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until /health answers OK; fail with the log if the server exits or stays silent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.session.get(self.url + "/health", timeout=1).text.strip() == "OK":
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        with open(os.path.join(self.dir, "log"), errors="replace") as log:
            raise RuntimeError(f"victoria-metrics did not start ({self.process.poll()}): {log.read()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        """Stop the server and remove its data."""
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # a graceful stop: flushes and closes its files
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def import_records(self, rows: Iterable[dict[str, Any]], batch: int = 100_000) -> dict[str, float]:
        """Encode rows as JSON lines into a spool file, then load it: one POST /api/v1/import and a flush.

        Memory stays at one batch. The load (POST + flush) is timed apart from the encoding (Python, with
        the rows' generator), so its rate is the server's; printed and returned with the server's CPU time.
        """
        count, spool = 0, os.path.join(self.dir, "import.jsonl")

        def counted() -> Iterator[dict[str, Any]]:
            nonlocal count
            for count, row in enumerate(rows, 1):  # noqa: B007 (count is read once the rows are spent)
                yield row

        began = time.perf_counter()
        with open(spool, "wb") as out:
            out.writelines(json_lines(counted(), batch))
        encoded, cpu = time.perf_counter(), self.cpu_seconds()
        with open(spool, "rb") as body:
            answer = self.session.post(self.url + "/api/v1/import", data=body)
        if answer.status_code != 204:
            raise RuntimeError(f"import: {answer.status_code} {answer.text[:300]}")
        self.flush()
        load = {
            "records": count,
            "encode": encoded - began,
            "seconds": time.perf_counter() - encoded,
            "server_cpu": self.cpu_seconds() - cpu,
            "body": os.path.getsize(spool),
        }
        os.remove(spool)
        print(
            f"  loaded {count:,} records ({load['body'] / 2**20:,.0f} MiB of JSON lines, encoded in "
            f"{load['encode']:.1f} s) in {load['seconds']:.1f} s: {count / load['seconds']:,.0f}/s, "
            f"server CPU {load['server_cpu']:.1f} s",
            flush=True,
        )
        return load

    def flush(self) -> None:
        """Make everything imported searchable (/internal/force_flush); in 1.79 not yet on disk: see merge()."""
        self.session.get(self.url + "/internal/force_flush").raise_for_status()

    def merge(self, timeout: float = 600) -> None:
        """Force-merge every partition (/internal/force_merge) and wait until no merge runs.

        Needed before bytes_on_disk(): in 1.79 a flush makes samples searchable in in-memory parts, which reach
        the disk only when merged (100,000 records: 7 KB on disk after the flush, 470 KB after this).
        """
        self.session.get(self.url + "/internal/force_merge").raise_for_status()
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            lines = self.session.get(self.url + "/metrics").text.splitlines()
            gauges = [line for line in lines if line.startswith(("vm_active_merges", "vm_active_force_merges"))]
            busy = sum(float(line.split()[-1]) for line in gauges)
            quiet = 0 if busy else quiet + 1

    def bytes_on_disk(self) -> int:
        """Apparent size (st_size) of every file under -storageDataPath (data parts, index, metadata); merge() first."""
        total = 0
        for folder, _, files in os.walk(self.data):
            for file in files:
                try:
                    total += os.path.getsize(os.path.join(folder, file))
                except FileNotFoundError:  # a part a merge has just replaced
                    pass
        return total

    def get(self, path: str, **params: Any) -> tuple[float, Any]:
        """GET path?params: (seconds for the request and reading its JSON, the answer's data)."""
        began = time.perf_counter()
        answer = self.session.get(self.url + path, params=params)
        body = answer.json()
        spent = time.perf_counter() - began
        if answer.status_code != 200:
            raise RuntimeError(f"{path} {params}: {answer.status_code} {body}")
        return spent, body["data"]

    # ---- the paired queries: each one request, (seconds, answer) ----

    def whole_average(self, gpu: int, start: int, end: int) -> tuple[float, float | None]:
        """(a) Mean gpuPercent of one GPU over [start, end): an instant query at end - 1 ms."""
        query = f'avg_over_time({name("utilization", "gpuPercent")}{{gpu="{gpu}"}}[{end - start}s])'
        spent, data = self.get("/api/v1/query", query=query, time=at(end))
        return spent, float(data["result"][0]["value"][1]) if data["result"] else None

    def buckets(self, step: int, start: int, end: int) -> tuple[float, dict[int, dict[int, float]]]:
        """(b, c) Mean gpuPercent per GPU and bucket [m, m + step) for m = start, start + step, ... < end.

        start and end are multiples of step, like the service's epoch-aligned buckets; empty buckets are absent.
        """
        query = f"avg_over_time({name('utilization', 'gpuPercent')}[{step}s])"
        spent, data = self.get("/api/v1/query_range", query=query, start=at(start + step), end=at(end), step=f"{step}s")
        return spent, {
            int(series["metric"]["gpu"]): {round(t) - step: float(v) for t, v in series["values"]}
            for series in data["result"]
        }

    def rollups(
        self, functions: tuple[str, ...], window: int, end: int, selector: str = EVERY
    ) -> tuple[float, dict[Key, dict[str, float]]]:
        """functions over [end - window, end) of each series of `selector`, one request: {series: {function: value}}."""
        names = ", ".join(f'"{function}"' for function in functions)
        query = f"aggr_over_time(({names}), {selector}[{window}s]) keep_metric_names"
        spent, data = self.get("/api/v1/query", query=query, time=at(end))
        answer: dict[Key, dict[str, float]] = defaultdict(dict)
        for series in data["result"]:
            answer[key_of(series["metric"])][series["metric"]["rollup"]] = float(series["value"][1])
        return spent, dict(answer)

    def latest(self, end: int, window: int = 300) -> tuple[float, dict[Key, dict[str, float]]]:
        """(d) The newest value and its time of every series seen in [end - 5 min, end)."""
        return self.rollups(("last_over_time", "tlast_over_time"), window, end)

    def hour_stats(self, end: int, selector: str = EVERY) -> tuple[float, dict[Key, dict[str, float]]]:
        """(e) Per series over [end - 1 h, end): min, max, avg, last, count, first and last time, in one request."""
        return self.rollups(STATS + TIMES, 3600, end, selector)


# ---- what the answers must be -------------------------------------------------------------------------


class Truth:
    """Every answer computed in Python from the rows themselves, as they stream past on their way to the import."""

    def __init__(self, end: int):
        self.end = end  # the data's end: the last hour is [end - 3600, end)
        self.sums: dict[tuple[int, int, int], list] = defaultdict(lambda: [0, 0])  # (step, gpu, bucket): sum, count
        self.latest: dict[Key, tuple[float, float]] = {}  # series: (second, value) of its newest sample
        self.hour: dict[Key, list[tuple[float, float]]] = defaultdict(list)  # series: (second, value) of the last hour

    def watch(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The rows, unchanged, each learnt on its way."""
        stamp, second = None, 0.0
        for row in rows:
            if row["timestamp"] != stamp:
                stamp, second = row["timestamp"], millis(row["timestamp"]) / 1000
            self.learn(row, second)
            yield row

    def learn(self, row: dict[str, Any], second: float) -> None:
        """Add one row: gpuPercent to its GPU's whole-range, minute and hour sums; every field to its series."""
        kind, gpu = row["metric"], row["gpuIndex"]
        if kind == "utilization":
            for step in (0, 60, 3600):  # step 0: the whole range, one bucket
                total = self.sums[step, gpu, int(second // step * step) if step else 0]
                total[0] += row["gpuPercent"]
                total[1] += 1
        pid = row["pid"] if kind == "process" else None
        for field in KINDS[kind]:
            key = (kind, field, row.get("host") or "", gpu, pid)
            if key not in self.latest or self.latest[key] <= (second, row[field]):
                self.latest[key] = (second, row[field])
            if self.end - 3600 <= second < self.end:
                self.hour[key].append((second, row[field]))

    def average(self, gpu: int) -> float:
        """(a) The mean gpuPercent of one GPU over all its rows."""
        total, count = self.sums[0, gpu, 0]
        return total / count

    def buckets(self, step: int, start: int, end: int) -> dict[int, dict[int, float]]:
        """(b, c) {gpu: {m: mean gpuPercent}} of the buckets [m, m + step) that have rows, start <= m < end."""
        answer: dict[int, dict[int, float]] = defaultdict(dict)
        for (size, gpu, bucket), (total, count) in sorted(self.sums.items()):
            if size == step and start <= bucket < end:
                answer[gpu][bucket] = total / count
        return dict(answer)

    def newest(self) -> dict[Key, dict[str, float]]:
        """(d) The newest value of every series and its time."""
        return {key: {"last_over_time": v, "tlast_over_time": second} for key, (second, v) in self.latest.items()}

    def hour_stats(self) -> dict[Key, dict[str, float]]:
        """(e) Every series' figures over [end - 1 h, end), named as VictoriaMetrics names them."""
        answer = {}
        for key, points in self.hour.items():
            values = [value for _, value in points]
            last = max(points)  # the newest; the greatest value if several share its time
            figures = (min(values), max(values), sum(values) / len(values), last[1], len(values))
            answer[key] = dict(zip(STATS, figures, strict=True))
            answer[key].update(tfirst_over_time=min(points)[0], tlast_over_time=last[0])
        return answer


def difference(got: Any, want: Any, where: str = "") -> str | None:
    """Where two answers differ (other keys, or numbers beyond 1e-9 relative), or None when they agree."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or got.keys() != want.keys():
            extra, missing = set(got or ()) - set(want), set(want) - set(got or ())
            return f"{where}: keys differ, extra {sorted(extra, key=str)[:3]}, missing {sorted(missing, key=str)[:3]}"
        return next((d for k in want if (d := difference(got[k], want[k], f"{where}[{k}]"))), None)
    if got is None or abs(got - want) > 1e-9 * max(1.0, abs(want)):
        return f"{where}: got {got}, want {want}"
    return None


# ---- the demo ---------------------------------------------------------------------------------------------


def paired(vm: Victoria, truth: Truth, first: int, end: int) -> dict[str, tuple[Callable[[], tuple], Any]]:
    """The queries bench/compare.py pairs with the service's, each with the answer it must give (end: whole minutes)."""
    six = end - 6 * 3600
    hours = (first // 3600 * 3600, -(-end // 3600) * 3600)
    return {
        "a. avg gpuPercent, GPU 0, whole range": (lambda: vm.whole_average(0, first, end), truth.average(0)),
        "b. 1-min avg gpuPercent, 8 GPUs, last 6 h": (lambda: vm.buckets(60, six, end), truth.buckets(60, six, end)),
        "c. 1-h avg gpuPercent, 8 GPUs, whole range": (lambda: vm.buckets(3600, *hours), truth.buckets(3600, *hours)),
        "d. latest value + time, every series": (lambda: vm.latest(end), truth.newest()),
        "e. last-hour stats, every series (1 request)": (lambda: vm.hour_stats(end), truth.hour_stats()),
    }


def check(queries: dict[str, tuple[Callable[[], tuple], Any]]) -> None:
    """Every query answers what Python computed from the rows, or the run stops naming the difference."""
    for label, (ask, want) in queries.items():
        problem = difference(ask()[1], want)
        if problem:
            raise SystemExit(f"{label}: VictoriaMetrics disagrees with the rows {problem}")
        print(f"  checked {label}: agrees with the rows", flush=True)


def timed(asks: list[Callable[[], tuple]], repeat: int) -> list[list[float]]:
    """Seconds of each query, round-robin, after 2 untimed rounds."""
    spent: list[list[float]] = [[] for _ in asks]
    for number in range(2 + repeat):
        for index, ask in enumerate(asks):
            seconds = ask()[0]
            if number >= 2:
                spent[index].append(seconds)
    return spent


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """A Markdown table (as bench/common.py prints them): names to the left, figures to the right."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(text) for text in column) for column in zip(columns, *cells, strict=True)]
    print("| " + " | ".join(title.ljust(width) for title, width in zip(columns, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * width for width in widths) + " |")
    for row in cells:
        figures = [text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True)]
        print("| " + " | ".join([row[0].ljust(widths[0]), *figures]) + " |")


def report(imported: dict[str, float], disk: int, queries: dict[str, Any], spent: list[list[float]]) -> None:
    """The load, the bytes on disk and each query's median, as Markdown tables."""
    n, seconds = imported["records"], imported["seconds"]
    print(
        f"\n{n:,} records (~{n * 11 / 6:,.0f} samples, 88 series); on disk: every file under -storageDataPath "
        "after a flush and a forced merge"
    )
    load = [
        "/api/v1/import JSON lines, 1 POST",
        f"{seconds:.1f}",
        f"{n / seconds:,.0f}",
        f"{imported['server_cpu']:.1f}",
        f"{disk:,}",
        f"{disk / n:.2f}",
    ]
    table(["load", "seconds", "records/s", "server CPU s", "bytes on disk", "bytes/record"], [load])
    print(f"\nmedian and max of {len(spent[0])} rounds (one HTTP request each, its JSON read)")
    rows = [
        [label, f"{statistics.median(values) * 1000:.1f} ms", f"{max(values) * 1000:.1f} ms"]
        for label, values in zip(queries, spent, strict=True)
    ]
    table(["query", "median", "max"], rows)


def main() -> None:
    """Load --records records, check every query against the rows, time them, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records to load (1000000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds (20), after 2 untimed")
    args = parser.parse_args()
    end = hour_start()
    first = end - span(args.records)
    with Victoria() as vm:
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(f"# bench/victoria.py | {stamp} | {vm.version} | nproc {os.cpu_count()} | load {load}")
        print(
            f"  flags: {' '.join(vm.flags)}\n  {args.records:,} records, {GPUS} GPUs x {len(KINDS)} kinds a second, "
            f"{time.strftime('%FT%TZ', time.gmtime(first))} to {time.strftime('%FT%TZ', time.gmtime(end))}"
        )
        truth = Truth(end)
        imported = vm.import_records(truth.watch(records(args.records, end)))
        vm.merge()
        disk = vm.bytes_on_disk()
        queries = paired(vm, truth, first, end)
        check(queries)
        spent = timed([ask for ask, _ in queries.values()], args.repeat)
    report(imported, disk, queries, spent)


if __name__ == "__main__":
    main()
