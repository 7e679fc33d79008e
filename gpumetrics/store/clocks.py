"""Each host's monotonic clock mapped to UTC: boots told apart, offsets estimated.

gpumon_client times its events with std::chrono::steady_clock: nanoseconds since the
host booted, no wall time at all. An event written at wall time W = offset + t reaches
the service at R >= W, so R - t >= offset: the smallest (R - t) seen for a boot is the
estimate, and it converges to the true offset plus the least delivery delay (the
crawler's poll interval and the network). The error of a mapped time is that excess.

A reboot starts the clock again near zero. An event is of a new boot when its time is
earlier than the boot's newest event and its implied boot time (R - t) is later than
the wall time of that newest event: in the same boot, that would mean it took longer to
arrive than the host had been up. Re-sent and late events of the same boot pass this
test; they only ever lower the estimate. Events of a host are handled in their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from .. import times
from ..db import backend_of


@dataclass
class Clock:
    host: str
    boot: int
    offset_ns: int
    max_ns: int
    changed: bool = False

    def wall_ns(self, ns: int) -> int:
        return self.offset_ns + ns


def _current(conn: Connection, hosts: set[str]) -> dict[str, Clock]:
    """The latest boot of each host (a POST of the crawler names one)."""
    sql = "SELECT host, boot, offset_ns, max_ns FROM host_clocks WHERE host = ? ORDER BY boot DESC LIMIT 1"
    backend = backend_of(conn)
    found = (row for host in hosts for row in backend.fetch(conn, sql, (host,)))
    return {host: Clock(host, boot, offset_ns, max_ns) for host, boot, offset_ns, max_ns in found}


def observe(clock: Clock | None, host: str, ns: int, received_ns: int) -> Clock:
    """The clock after one event of the host at monotonic `ns`, received at `received_ns`."""
    implied = received_ns - ns
    if clock is None:
        return Clock(host, 1, implied, ns, changed=True)
    if ns < clock.max_ns and implied > clock.offset_ns + clock.max_ns:
        return Clock(host, clock.boot + 1, implied, ns, changed=True)  # a reboot
    if implied < clock.offset_ns or ns > clock.max_ns:
        clock.offset_ns, clock.max_ns = min(clock.offset_ns, implied), max(clock.max_ns, ns)
        clock.changed = True
    return clock


def assign(conn: Connection, hosts_and_times: Sequence[tuple[str, int]], received_ns: int) -> list[Clock]:
    """The clock (host, boot, offset) of each event, in order; saves what was learned."""
    backend_of(conn).lock_hosts(conn, {host for host, _ in hosts_and_times})
    clocks: dict[str, Clock] = _current(conn, {host for host, _ in hosts_and_times})
    out = []
    for host, ns in hosts_and_times:
        clock = observe(clocks.get(host), host, ns, received_ns)
        clocks[host] = clock
        out.append(clock)
    _save({(c.host, c.boot): c for c in out if c.changed}.values(), conn)
    return out


def _save(changed: Any, conn: Connection) -> None:
    rows = [(c.host, c.boot, c.offset_ns, c.max_ns, times.now_micros()) for c in changed]
    if not rows:
        return
    backend = backend_of(conn)
    sql = (
        "INSERT INTO host_clocks (host, boot, offset_ns, max_ns, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (host, boot) DO UPDATE SET "
        f"offset_ns = {backend.smaller}(host_clocks.offset_ns, excluded.offset_ns), "
        f"max_ns = {backend.larger}(host_clocks.max_ns, excluded.max_ns), updated_at = excluded.updated_at"
    )
    backend.executemany(conn, sql, rows)
