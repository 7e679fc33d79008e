"""SIGKILL the service in the middle of a stream of POSTs: no acknowledged record is lost or doubled.

Clients stream batches to the real gunicorn service and resend, as the crawler does, every
batch whose answer they did not get, until it is acknowledged. In the middle, while POSTs
are in flight, the whole service (master and workers) or only its workers die by SIGKILL.
Afterwards every batch must be in the database exactly once and as sent, every answer to a
resent batch must count it as stored or as duplicates (one transaction: all or nothing),
and the SQLite file must pass integrity_check, both as the crash left it and at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from samples import record
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gpumetrics import times

pytestmark = pytest.mark.slow

CLIENTS = 4
BATCH = 50
METRICS = ("memory", "utilization", "temperature", "power", "clocks", "process")
ACKS_BEFORE_KILL = 10  # per client
ACKS_AFTER_RESTART = 15  # per client
DEADLINE = 45  # seconds for the whole stream, kill and restart included

Identity = tuple[int, str, int]  # gpuIndex, metric, timestamp in epoch microseconds


def make_batch(client: int, number: int) -> list[dict]:
    """Batch `number` of `client`: its own GPU, and timestamps no other batch has."""
    start = number * BATCH
    return [record(METRICS[n % len(METRICS)], seconds=start + n, gpu=client) for n in range(start, start + BATCH)]


def identity(item: dict) -> Identity:
    return item["gpuIndex"], item["metric"], times.parse_iso(item["timestamp"])


@dataclass
class Batch:
    client: int
    number: int
    records: list[dict]
    failures: list[str] = field(default_factory=list)  # attempts whose fate the client never learned
    answer: dict | None = None
    acked_at: float | None = None


@dataclass
class Client:
    index: int
    batches: list[Batch] = field(default_factory=list)
    in_flight: bool = False

    def acked(self, before: float = float("inf")) -> list[Batch]:
        return [b for b in self.batches if b.acked_at is not None and b.acked_at < before]


class Stream:
    """CLIENTS threads POSTing batches to `self.url`, resending each until a 201 answers it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients = [Client(n) for n in range(CLIENTS)]
        self.stop = threading.Event()
        self.aborted = threading.Event()  # the test failed: stop resending at once
        self.deadline = time.monotonic() + DEADLINE
        self.pool = ThreadPoolExecutor(CLIENTS)
        self.futures = [self.pool.submit(self.run, client) for client in self.clients]

    def run(self, client: Client) -> None:
        with requests.Session() as http:
            while not self.stop.is_set():
                batch = Batch(client.index, len(client.batches), make_batch(client.index, len(client.batches)))
                client.batches.append(batch)
                self.send(http, client, batch)

    def send(self, http: requests.Session, client: Client, batch: Batch) -> None:
        while time.monotonic() < self.deadline and not self.aborted.is_set():
            client.in_flight = True
            try:
                response = http.post(self.url + "/metrics", json=batch.records, timeout=(2, 15))
            except requests.RequestException as error:
                batch.failures.append(describe(error))
                time.sleep(0.02)
                continue
            finally:
                client.in_flight = False
            assert response.status_code == 201, f"batch {batch.client}/{batch.number}: {response.text}"
            batch.answer = response.json()
            batch.acked_at = time.monotonic()
            return
        if not self.aborted.is_set():
            raise AssertionError(f"batch {batch.client}/{batch.number} never acknowledged: {batch.failures[-3:]}")

    def wait(self, condition, what: str) -> None:
        while not condition():
            for future in self.futures:
                if future.done():
                    future.result()  # a client's failure, raised here
                    raise AssertionError("a client stopped early")
            if time.monotonic() > self.deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.0005)

    def acks_each(self, count: int, after: float = 0) -> bool:
        return all(len([b for b in c.acked() if b.acked_at > after]) >= count for c in self.clients)

    def all_in_flight(self) -> bool:
        return all(client.in_flight for client in self.clients)

    def finish(self, abort: bool = False) -> None:
        if abort:
            self.aborted.set()
        self.stop.set()
        self.pool.shutdown(wait=True)
        for future in self.futures:
            future.result()

    def batches(self) -> list[Batch]:
        return [batch for client in self.clients for batch in client.batches]


def describe(error: requests.RequestException) -> str:
    kind = "refused" if "refused" in str(error).lower() else "cut off"
    return f"{kind}: {type(error).__name__}"


def read_back(url: str) -> list[dict]:
    """Every record, through the API, page by page."""
    items: list[dict] = []
    cursor = None
    with requests.Session() as http:
        while True:
            params = {"limit": 10000, **({"cursor": cursor} if cursor else {})}
            response = http.get(url + "/metrics", params=params, timeout=30)
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["items"]
            cursor = page["next"]
            if cursor is None:
                return items


def stored(database_url: str) -> tuple[Counter[Identity], int, int, list[tuple]]:
    """Straight from the database: identities, rows, rows without a GPU, and the GPUs."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT g.gpu_index, r.metric, r.ts FROM records r JOIN gpus g ON g.id = r.gpu_id")
            ).all()
            total = conn.execute(text("SELECT count(*) FROM records")).scalar_one()
            orphans = conn.execute(
                text("SELECT count(*) FROM records r LEFT JOIN gpus g ON g.id = r.gpu_id WHERE g.id IS NULL")
            ).scalar_one()
            gpus = conn.execute(text("SELECT host, gpu_index, uuid FROM gpus ORDER BY gpu_index")).all()
    finally:
        engine.dispose()
    return Counter((int(row[0]), row[1], int(row[2])) for row in rows), total, orphans, [tuple(g) for g in gpus]


def check_sqlite_file(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def check_exactly_once(database_url: str, batches: list[Batch]) -> None:
    """Every record of `batches` in the database exactly once; nothing else but other batches' records."""
    counts, total, orphans, gpus = stored(database_url)
    doubled = {key: n for key, n in counts.items() if n != 1}
    assert not doubled, f"records stored more than once: {list(doubled.items())[:5]}"
    assert total == sum(counts.values()) and orphans == 0
    missing = [(b.client, b.number, identity(r)) for b in batches for r in b.records if identity(r) not in counts]
    assert not missing, f"{len(missing)} acknowledged records lost (client, batch, record), e.g. {missing[:3]}"
    clients = sorted({b.client for b in batches})
    assert gpus == [("", n, None) for n in clients], "one GPU per client, never created twice"


class HalfUpload:
    """A POST whose body stops halfway: a worker holds it in its handler, waiting for the rest."""

    def __init__(self, url: str, batch: Batch) -> None:
        address = urlsplit(url)
        body = json.dumps(batch.records).encode()
        head = (
            f"POST /metrics HTTP/1.1\r\nHost: {address.hostname}:{address.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.sock.sendall(head.encode() + body[: len(body) // 2])
        self.sent_at = time.monotonic()

    def fate(self) -> str:
        """What the client sees once the service died: 'cut off', or what it got instead."""
        try:
            answer = self.sock.recv(65536)
        except ConnectionResetError:
            return "cut off"
        except TimeoutError:
            return "no answer and still open"
        return "cut off" if answer == b"" else f"an answer: {answer[:200]!r}"

    def close(self) -> None:
        self.sock.close()


def crash_image(database: Path, into: Path) -> str:
    """A copy of the SQLite file and its WAL as the crash left them; opening it replays the WAL."""
    into.mkdir()
    for suffix in ("", "-wal"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copyfile(source, into / source.name)
    return f"sqlite:///{into / database.name}"


def wait_dead(pids: set[int], timeout: float = 10) -> None:
    """Until every pid is gone or a zombie: none of them can write to the database any more."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"pid {pid} outlived SIGKILL")


@pytest.mark.parametrize("victims", ["master and workers", "workers"])
def test_sigkill_mid_stream_loses_and_doubles_no_acknowledged_record(gunicorn, database_url, tmp_path, victims):
    url = make_url(database_url)
    sqlite = url.get_backend_name() == "sqlite"
    first = gunicorn()
    stream = Stream(first.url)
    # One more client, whose only batch is halfway up when the service dies: a POST surely in flight.
    halfway = Batch(CLIENTS, 0, make_batch(CLIENTS, 0))
    upload = None
    try:
        stream.wait(lambda: stream.acks_each(ACKS_BEFORE_KILL), "the first acknowledgements")
        upload = HalfUpload(first.url, halfway)
        # Time for a worker to take the upload in; then the moment every client waits on an answer.
        stream.wait(lambda: time.monotonic() - upload.sent_at > 0.3 and stream.all_in_flight(), "POSTs in flight")
        workers = first.worker_pids()
        assert len(workers) == 2
        if victims == "master and workers":
            first.kill()
        else:
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_dead(workers)
        acked_before_kill = [b for c in stream.clients for b in c.acked(before=time.monotonic())]
        halfway.failures.append(upload.fate())
        assert halfway.failures == ["cut off"], "the upload must die with the worker that held it"

        if victims == "master and workers":
            # Nothing of the service runs: what the crash left must already hold every acknowledged batch.
            if sqlite:
                image = crash_image(Path(url.database), tmp_path / "crash-image")
                check_sqlite_file(Path(make_url(image).database))
                check_exactly_once(image, acked_before_kill)
            else:
                check_exactly_once(database_url, acked_before_kill)
            second = gunicorn()  # the same database, as a restarted container would
            stream.url = second.url
        else:
            second = first
            stream.wait(lambda: len(first.worker_pids() - workers) == 2, "the master to replace both workers")
        stream.wait(lambda: stream.acks_each(ACKS_AFTER_RESTART, after=killed_at), "acknowledgements after the kill")
    except BaseException:
        stream.finish(abort=True)
        raise
    finally:
        if upload is not None:
            upload.close()
    stream.finish()

    # The crawler resends the batch whose upload was cut off: half a body stored nothing.
    with requests.Session() as http:
        response = http.post(second.url + "/metrics", json=halfway.records, timeout=15)
    assert (response.status_code, response.json()) == (
        201,
        {"stored": BATCH, "duplicates": 0, "rejected": [], "warnings": []},
    )
    halfway.answer, halfway.acked_at = response.json(), time.monotonic()

    batches = [*stream.batches(), halfway]
    failures = Counter(failure.split(":")[0] for b in stream.batches() for failure in b.failures)
    assert len(acked_before_kill) >= CLIENTS * ACKS_BEFORE_KILL
    assert all(b.acked_at is not None for b in batches)
    for batch in batches:
        answer = (batch.answer["stored"], batch.answer["duplicates"], batch.answer["rejected"])
        if batch.failures:  # resent: the lost attempt stored all of it or none of it
            assert answer in ((BATCH, 0, []), (0, BATCH, [])), f"batch {batch.client}/{batch.number}: {answer}"
        else:
            assert answer == (BATCH, 0, []), f"batch {batch.client}/{batch.number}: {answer}"

    # A crawler that replays its spool after a restart: batches acknowledged before the kill are duplicates.
    replayed = [max(c.acked(before=killed_at), key=lambda b: b.number) for c in stream.clients]
    with requests.Session() as http:
        for batch in replayed:
            response = http.post(second.url + "/metrics", json=batch.records, timeout=15)
            assert (response.status_code, response.json()) == (
                201,
                {"stored": 0, "duplicates": BATCH, "rejected": [], "warnings": []},
            )

    sent = {identity(r): r for b in batches for r in b.records}
    items = read_back(second.url)
    assert len(items) == len(sent) == len(batches) * BATCH
    assert {identity(item): item for item in items} == sent, "every record exactly once, as it was sent"

    if victims == "workers":
        assert first.process.poll() is None, "the master survives its workers"
    second.stop()
    if sqlite:
        check_sqlite_file(Path(url.database))
    check_exactly_once(database_url, batches)
    resent = [b for b in batches if b.failures]
    print(
        json.dumps(
            {
                "victims": victims,
                "batches": len(batches),
                "ackedBeforeKill": len(acked_before_kill),
                "resent": len(resent),
                "resentFoundStored": sum(b.answer["duplicates"] == BATCH for b in resent),
                "failures": dict(failures),
            }
        )
    )
