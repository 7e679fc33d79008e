"""Fleet identity: which stored GPU each record belongs to.

A GPU is known by (host, index) when the index is given, else by (host, UUID). A record
with both ties them: a GPU first seen by UUID alone takes the index, and its records
move to the GPU of that index if there already is one. Records with neither index nor
UUID belong to their host (a GPU row with neither, never listed as a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Connection, delete, func, insert, select, update

from ..db import backend_of
from ..db.tables import gpus, records
from ..kinds import COLUMNS
from . import latest, rollups

LOCAL_HOST = ""  # records without a host belong to the host the service runs on
RECORD_LAYOUT = (records.c.gpu_id, records.c.metric, records.c.ts, *(records.c[column] for column in COLUMNS))


class GpuKey(NamedTuple):
    """How a record names its GPU."""

    host: str
    index: int | None
    uuid: str | None


@dataclass
class Sighting:
    """What one batch says of one GPU key: its name and the times it covers."""

    name: str | None
    first: int
    last: int

    def see(self, name: str | None, ts: int) -> None:
        self.name = name or self.name
        self.first, self.last = min(self.first, ts), max(self.last, ts)


@dataclass
class Gpu:
    """A stored GPU, as loaded for one batch."""

    id: int
    host: str
    gpu_index: int | None
    uuid: str | None
    name: str | None
    first_seen: int
    last_seen: int


class Fleet:
    """The GPUs of a batch's hosts, loaded once; resolving a key writes what it learns."""

    def __init__(self, conn: Connection, hosts: set[str]) -> None:
        backend_of(conn).lock_hosts(conn, hosts)
        self.conn = conn
        self.gpus = [Gpu(**row._asdict()) for row in conn.execute(select(gpus).where(gpus.c.host.in_(hosts)))]
        self.merged: dict[int, int] = {}  # id of a GPU merged away -> id of the GPU it joined
        self.seen: dict[int, Gpu] = {}  # GPUs whose name or time range the batch changed

    def resolve(self, key: GpuKey, sighting: Sighting) -> int:
        """The id of the GPU `key` names, created or tied together as needed."""
        gpu = self._tie(key, *self._lookup(key))
        if gpu is None:
            return self._create(key, sighting).id
        if (
            (sighting.name and sighting.name != gpu.name)
            or sighting.first < gpu.first_seen
            or sighting.last > gpu.last_seen
        ):
            gpu.name = sighting.name or gpu.name
            gpu.first_seen, gpu.last_seen = min(gpu.first_seen, sighting.first), max(gpu.last_seen, sighting.last)
            self.seen[gpu.id] = gpu
        return gpu.id

    def save_sightings(self) -> None:
        """Write the batch's names and time ranges: one statement for every GPU seen."""
        rows = [(gpu.name, gpu.first_seen, gpu.last_seen, gpu.id) for gpu in self.seen.values() if gpu in self.gpus]
        if rows:
            sql = "UPDATE gpus SET name = ?, first_seen = ?, last_seen = ? WHERE id = ?"
            backend_of(self.conn).executemany(self.conn, sql, rows)

    def current_id(self, gpu_id: int) -> int:
        """Where a GPU resolved earlier in the batch now is, after any merge."""
        return self.merged.get(gpu_id, gpu_id)

    def _lookup(self, key: GpuKey) -> tuple[Gpu | None, Gpu | None]:
        """The GPU `key` names, and a GPU known only by the key's UUID that is the same one."""
        host, index, uuid = key
        same_host = [gpu for gpu in self.gpus if gpu.host == host]
        if uuid is None and index is None:
            return next((gpu for gpu in same_host if gpu.uuid is None and gpu.gpu_index is None), None), None
        by_uuid = sorted(
            (gpu for gpu in same_host if uuid is not None and gpu.uuid == uuid),
            key=lambda gpu: gpu.last_seen,
            reverse=True,
        )
        if index is None:
            return (by_uuid[0] if by_uuid else None), None
        indexed = next((gpu for gpu in same_host if gpu.gpu_index == index), None)
        return indexed, next((gpu for gpu in by_uuid if gpu.gpu_index is None), None)

    def _tie(self, key: GpuKey, gpu: Gpu | None, twin: Gpu | None) -> Gpu | None:
        """Write what the key teaches: the UUID-only twin takes the index, or joins the GPU of it."""
        if gpu is None:
            if twin is not None:
                self._set(twin, gpu_index=key.index)
            return twin
        if key.uuid is not None and gpu.uuid != key.uuid:
            self._set(gpu, uuid=key.uuid)
        if twin is not None:
            self._merge(twin, into=gpu)
        return gpu

    def _create(self, key: GpuKey, sighting: Sighting) -> Gpu:
        values = {"host": key.host, "gpu_index": key.index, "uuid": key.uuid, "name": sighting.name}
        values |= {"first_seen": sighting.first, "last_seen": sighting.last}
        gpu_id = self.conn.execute(insert(gpus).values(**values)).inserted_primary_key[0]
        gpu = Gpu(id=gpu_id, **values)
        self.gpus.append(gpu)
        return gpu

    def _set(self, gpu: Gpu, **changes: object) -> None:
        if changes:
            self.conn.execute(update(gpus).where(gpus.c.id == gpu.id).values(**changes))
            for name, value in changes.items():
                setattr(gpu, name, value)

    def _merge(self, other: Gpu, into: Gpu) -> None:
        """Move the records of a GPU known only by UUID to the GPU of its index."""
        twin = records.alias("twin")
        same_sample = (
            select(twin.c.id)
            .where(
                twin.c.gpu_id == into.id,
                twin.c.metric == records.c.metric,
                twin.c.ts == records.c.ts,
                func.coalesce(twin.c.pid, -1) == func.coalesce(records.c.pid, -1),
            )
            .exists()
        )
        twice = self.conn.execute(select(*RECORD_LAYOUT).where(records.c.gpu_id == other.id, same_sample)).all()
        dropped = rollups.summarize([row[0] for row in twice], twice, tuple(c.name for c in RECORD_LAYOUT))
        self.conn.execute(delete(records).where(records.c.gpu_id == other.id, same_sample))
        self.conn.execute(update(records).where(records.c.gpu_id == other.id).values(gpu_id=into.id))
        rollups.move(self.conn, other.id, into.id, dropped)
        latest.rebuild(self.conn, [into.id, other.id])
        self.conn.execute(delete(gpus).where(gpus.c.id == other.id))
        self.gpus.remove(other)
        self.merged[other.id] = into.id
        self._set(
            into,
            first_seen=min(into.first_seen, other.first_seen),
            last_seen=max(into.last_seen, other.last_seen),
            name=into.name or other.name,
        )


def resolve_gpus(conn: Connection, seen: dict[GpuKey, Sighting]) -> dict[GpuKey, int]:
    """The GPU id of every key; GPUs are created, named and tied together as needed."""
    fleet = Fleet(conn, {key.host for key in seen})
    resolved = {key: fleet.resolve(key, sighting) for key, sighting in seen.items()}
    fleet.save_sightings()
    return {key: fleet.current_id(gpu_id) for key, gpu_id in resolved.items()}
