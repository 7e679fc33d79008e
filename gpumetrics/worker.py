"""gunicorn's thread worker, made to share new connections fairly among the workers.

Every worker waits on the one listening socket and the kernel wakes them all when a
client connects: whichever calls accept() first gets the connection. Crawlers keep
their connection, so a few that connect while one worker is quicker to wake can all
land on it, and one core serves them while the others idle. Here the workers publish
how loaded each is (shared memory made by the master before it forks): whether all its
threads have been busy for a while (a long export, a slow client), then how many
connections it holds. A worker takes new connections
only while no other ready worker is less loaded (nginx's workers back off the same way,
by how full they are). The least loaded worker always accepts, so no connection waits
for a slot; a worker that stepped aside looks again every few milliseconds.
"""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import RawArray

from gunicorn.workers.gthread import ThreadWorker

SLOTS = 64  # workers that take part; any beyond accept as plain gthread workers do
FREE, BOOTING, READY = 0, 1, 2
RECHECK_S = 0.005  # how soon a worker that stepped aside looks again

_states = RawArray("b", SLOTS)  # per slot: FREE, BOOTING or READY; written by the master and the worker
_conns = RawArray("q", SLOTS)  # per slot: the connections its worker holds
_full_since = RawArray("q", SLOTS)  # per slot: since when (monotonic ns) all its threads are busy; 0: not
STUCK_NS = 500_000_000  # all threads busy this long: a request that will take a while


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        """In the master, before the fork: the worker takes a free slot."""
        self.slot = next((at for at in range(SLOTS) if _states[at] == FREE), None)
        if self.slot is not None:
            _states[self.slot], _conns[self.slot], _full_since[self.slot] = BOOTING, 0, 0
        self._nr_conns = self._answering = 0
        super().__init__(*args, **kwargs)

    @property
    def nr_conns(self) -> int:
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:  # gthread counts here: publish it
        self._nr_conns = value
        if self.slot is not None:
            _conns[self.slot] = value

    @property
    def worker_connections(self) -> int:
        """gthread accepts while nr_conns is below this: its limit, or none while a peer is less loaded."""
        if self.slot is not None and self._load(self.slot, time.monotonic_ns()) > self._least_loaded_elsewhere():
            return 0
        return self._limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._limit = value

    @staticmethod
    def _load(slot: int, now: int) -> tuple[bool, int]:
        since = _full_since[slot]
        return bool(since) and now - since > STUCK_NS, _conns[slot]

    def _least_loaded_elsewhere(self) -> tuple[bool, float]:
        states, now = _states[:], time.monotonic_ns()
        loads = [self._load(at, now) for at in range(SLOTS) if states[at] == READY and at != self.slot]
        return min(loads, default=(True, float("inf")))

    def _answering_changed(self, by: int) -> None:
        self._answering += by
        if self.slot is None:
            return
        if self._answering < self.cfg.threads:
            _full_since[self.slot] = 0
        elif not _full_since[self.slot]:
            _full_since[self.slot] = time.monotonic_ns()

    def enqueue_req(self, conn) -> None:
        self._answering_changed(+1)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs) -> None:
        self._answering_changed(-1)
        super().finish_request(conn, fs)

    def accept(self, listener) -> None:
        """The listener woke every worker; one that became busier since it looked steps aside."""
        if self.worker_connections:
            super().accept(listener)

    def run(self) -> None:
        if self.slot is not None:
            _states[self.slot] = READY
        try:
            super().run()
        finally:
            if self.slot is not None:
                _states[self.slot] = BOOTING  # stopping: the master frees the slot (release)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        super().wait_for_and_dispatch_events(RECHECK_S if not self._accepting and self.alive else timeout)

    def release(self) -> None:
        """In the master, once the worker has exited: its slot is free again."""
        if self.slot is not None:
            _states[self.slot], _conns[self.slot], _full_since[self.slot] = FREE, 0, 0
