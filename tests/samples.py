"""Valid records of every kind, for tests to start from and spoil one field at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

FIELDS = {
    "memory": {"totalMiB": 40960, "usedMiB": 1234, "freeMiB": 39726},
    "utilization": {"gpuPercent": 72, "memoryPercent": 35},
    "temperature": {"celsius": 62},
    "power": {"watts": 165.5},
    "clocks": {"graphicsMHz": 1410, "memoryMHz": 1215},
    "process": {"pid": 1234, "usedMiB": 2048},
}
T0 = datetime(2025, 12, 1, 18, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def record(metric: str = "memory", seconds: float = 0, gpu: int = 0, **changes) -> dict:
    """A valid record of `metric`, `seconds` after T0, with `changes` applied."""
    out = {"timestamp": iso(T0 + timedelta(seconds=seconds)), "gpuIndex": gpu, "metric": metric, **FIELDS[metric]}
    out.update(changes)
    return out
