"""The service with a change under trial, for benchmarks only: `bench.experiment:app`.

Each BENCH_* variable applies one change that a benchmark report proposes for the
service, so that its effect is measured on the real gunicorn before anyone edits
gpumetrics/. Without any of them this is exactly wsgi:app. (The switches of the changes
the service has since taken, the write flock, batched decoding and the PostgreSQL
purge, are in this file's history.)

    BENCH_CHUNK_BYTES=262144      gpumetrics.jobs.tail.CHUNK_BYTES (bytes per tail transaction)
    BENCH_SWITCH_INTERVAL=0.001   sys.setswitchinterval in every worker (GIL hand-over)
    BENCH_PG_SPLIT_GPUS=1         PostgreSQL: store.insert resolves the GPUs (host lock, gpus rows)
                                  in a short transaction of its own, committed before the records
                                  are copied, so the host lock is not held during the COPY
"""

from __future__ import annotations

import os
import sys

from sqlalchemy.orm import Session

from gpumetrics import store
from gpumetrics.jobs import tail

if os.environ.get("BENCH_CHUNK_BYTES"):
    tail.CHUNK_BYTES = int(os.environ["BENCH_CHUNK_BYTES"])

if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

_plain_insert = store.insert


def _split_insert(session, batch) -> tuple[int, int]:
    prepared = batch if isinstance(batch, store.Prepared) else store.prepare(batch)
    bind = session.get_bind()
    if not prepared.rows or bind.dialect.name != "postgresql":
        return _plain_insert(session, prepared)
    with Session(bind) as gpu_session, gpu_session.begin():  # the host lock and gpus rows: short
        ids = store.resolve_gpus(gpu_session, prepared.gpus)
    for row, key in zip(prepared.rows, prepared.keys, strict=True):
        row[0] = ids[key]
    stored = store._copy_insert(session.connection(), prepared.rows)
    return stored, len(prepared.rows) - stored


if os.environ.get("BENCH_PG_SPLIT_GPUS"):
    store.insert = _split_insert

from wsgi import app  # noqa: E402

__all__ = ["app"]
