"""The database tables, as SQLAlchemy Core tables in one MetaData.

The records table takes one column per distinct field of the kind registry, so its
shape follows kinds.py. Times are integer epoch microseconds (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from ..kinds import COLUMNS, NAME_MAX, Field
from .backends import ID_TYPE as Id

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _column_type(field: Field):
    if field.type == "string":
        return Text() if field.max_length is None or field.max_length > NAME_MAX else String(field.max_length)
    return {"number": Float, "integer": BigInteger}[field.type]()


gpus = Table(
    "gpus",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # '' is the local host: seed records carry no host.
    Column("host", String(NAME_MAX), nullable=False, server_default=""),
    Column("gpu_index", Integer, nullable=True),
    Column("uuid", String(NAME_MAX), nullable=True),
    Column("name", String(NAME_MAX), nullable=True),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Index(None, "host", "gpu_index", unique=True),
    Index(None, "host", "uuid"),
)

records = Table(
    "records",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gpu_id", Id, ForeignKey("gpus.id"), nullable=False),
    Column("metric", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),
    *(Column(name, _column_type(field), nullable=True) for name, field in COLUMNS.items()),
)

# The identity of a record (one sample of one kind of one GPU at one time; per pid for
# process records). It makes re-sent records duplicates, and it is also the index
# every per-GPU query ranges over.
Index(
    "uq_records_identity",
    records.c.gpu_id,
    records.c.metric,
    records.c.ts,
    func.coalesce(records.c.pid, -1),
    unique=True,
)
Index("ix_records_ts", records.c.ts)

# Where each tailed file was read up to, keyed by the file itself: its path and the
# fingerprint of its head (jobs/tail.py), not by the name of the machine that reads it, so
# a container started anew under another hostname reads on where the old one stopped. It
# is written in the same transaction as the records its lines produced. `position_sum`
# (a checksum of the bytes just before `position`) tells an appended file from one
# rewritten in place; `finished_at` is set once a file rotated away has been read to its
# end. Rows from before migration 0005 have no fingerprint; they belong to `host`, and the
# tailer of that host takes them over. `host` is otherwise the host that read it last.
tail_files = Table(
    "tail_files",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("host", String(NAME_MAX), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("device", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("lines_read", BigInteger, nullable=False),
    Column("records_stored", BigInteger, nullable=False),
    Column("duplicates", BigInteger, nullable=False),
    Column("lines_rejected", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("bytes_behind", BigInteger, nullable=True),  # at the last poll, for /health
    Column("fingerprint", String(64), nullable=True),
    Column("position_sum", String(64), nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    UniqueConstraint("path", "fingerprint"),
)

# What each host's tailer last found at each path it tails, for /health and for logging
# a file that goes missing or unreadable once, not at every poll: `state` is ok, missing
# or unreadable since `since`; `fingerprint` names the file last read there (tail_files).
tail_paths = Table(
    "tail_paths",
    metadata,
    Column("host", String(NAME_MAX), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("since", BigInteger, nullable=False),
    Column("fingerprint", String(64), nullable=True),
)

# The last run of each periodic job (retention), for /health.
job_runs = Table(
    "job_runs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=False),
    Column("outcome", Text, nullable=False),
)

# Which process took each job last ("host:pid"), written when it takes the job's lock.
job_runners = Table(
    "job_runners",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("runner", String(255), nullable=False),
    Column("since", BigInteger, nullable=False),
)

# What each minute of each GPU's records of one field adds up to (store/rollups.py),
# kept ROLLUP_RETENTION_DAYS, longer than the records: long series and statistics read
# a row a minute instead of every record. `minute` is the epoch microseconds it starts at;
# `last` is the value at `last_ts` (the greatest, when several records share that time).
rollups = Table(
    "rollups",
    metadata,
    Column("gpu_id", Id, ForeignKey("gpus.id"), primary_key=True),
    Column("metric", String(16), primary_key=True),
    Column("field", String(32), primary_key=True),
    Column("minute", BigInteger, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Column("first_ts", BigInteger, nullable=False),
    Column("last_ts", BigInteger, nullable=False),
    Column("last", Float, nullable=False),
    sqlite_with_rowid=False,
)
Index("ix_rollups_minute", rollups.c.minute)  # retention
Index("ix_rollups_metric_field_minute", rollups.c.metric, rollups.c.field, rollups.c.minute)  # every GPU's chart

# The newest record of each GPU and kind (for processes: every process at the newest
# time), a copy kept current by every write, so "the fleet now" is one small read.
latest = Table(
    "latest",
    metadata,
    Column("gpu_id", Id, ForeignKey("gpus.id"), primary_key=True),
    Column("metric", String(16), primary_key=True),
    Column("pid_key", BigInteger, primary_key=True),  # the pid of a process record, -1 otherwise
    Column("ts", BigInteger, nullable=False),
    *(Column(name, _column_type(field), nullable=True) for name, field in COLUMNS.items()),
    sqlite_with_rowid=False,
)

# Facts the service keeps about itself: "records_expired_before" is where retention last
# cut the records (a whole minute); a minute before it that has a rollup but no records
# is sealed: a record for it could be a re-send that nothing can tell from a new one.
marks = Table(
    "marks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# ---- gpumon_client's events (store/clocks.py, store/spans.py) ------------------------------
# Their times are nanoseconds of a host's monotonic clock. Each host's boots are told
# apart, and each boot's offset to UTC is estimated (wall = offset_ns + monotonic ns);
# events keep their raw nanoseconds, so times are mapped when read, with the best estimate.
host_clocks = Table(
    "host_clocks",
    metadata,
    Column("host", String(NAME_MAX), primary_key=True),
    Column("boot", Integer, primary_key=True),
    Column("offset_ns", BigInteger, nullable=False),  # smallest (receive time - event time) seen
    Column("max_ns", BigInteger, nullable=False),  # the newest event time of the boot
    Column("updated_at", BigInteger, nullable=False),
)

# Scopes (begin .. end) and kernel launches. `key` hashes (type, name, tag): with host,
# pid and the start it makes a re-sent event a duplicate, without indexing long names.
spans = Table(
    "spans",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("host", String(NAME_MAX), nullable=False),
    Column("boot", Integer, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("app", Text, nullable=False),
    Column("type", String(8), nullable=False),  # scope or kernel
    Column("name", Text, nullable=False),
    Column("tag", Text, nullable=False),  # '' when none
    Column("key", BigInteger, nullable=False),
    Column("name_key", BigInteger, nullable=False),  # hashes (type, name): the summary's groups
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=True),  # null while a scope is open
    Column("duration_ns", BigInteger, nullable=True),
    Column("state", String(10), nullable=False),  # open, closed or abandoned
    *(Column(name, Integer, nullable=True) for name in ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z")),
    Column("shared_mem_bytes", BigInteger, nullable=True),
    Column("cuda_error", String(NAME_MAX), nullable=True),
    Column("memory_begin", Text, nullable=True),  # device snapshots, JSON
    Column("memory_end", Text, nullable=True),
    UniqueConstraint("host", "pid", "start_ns", "key"),
)
Index("ix_spans_host_boot_start_ns", spans.c.host, spans.c.boot, spans.c.start_ns)
Index("ix_spans_name_key_duration_ns", spans.c.name_key, spans.c.duration_ns)
# The summary of one host (or process): its groups and each name's median walk these
# entries alone (pid and cuda_error ride along), not the table (store/spans.py).
Index(
    "ix_spans_host_name_key_duration_ns",
    *(spans.c[name] for name in ("host", "name_key", "duration_ns", "pid", "cuda_error")),
)

# A scope's samples of device memory while it runs.
scope_samples = Table(
    "scope_samples",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("host", String(NAME_MAX), nullable=False),
    Column("boot", Integer, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("key", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("memory", Text, nullable=True),
    UniqueConstraint("host", "pid", "ts_ns", "key"),
)

# The GPU samples already turned into records (their event times, so a re-send is a duplicate).
system_samples = Table(
    "system_samples",
    metadata,
    Column("host", String(NAME_MAX), primary_key=True),
    Column("app_key", BigInteger, primary_key=True),
    Column("ts_ns", BigInteger, primary_key=True),
    Column("boot", Integer, nullable=False),
)

# Every process that sent events: per host, boot and pid, its app and time range.
processes = Table(
    "processes",
    metadata,
    Column("host", String(NAME_MAX), primary_key=True),
    Column("boot", Integer, primary_key=True),
    Column("pid", BigInteger, primary_key=True),
    Column("app", Text, nullable=False),
    Column("first_ns", BigInteger, nullable=False),
    Column("last_ns", BigInteger, nullable=False),
    Column("init_ns", BigInteger, nullable=True),
    Column("shutdown_ns", BigInteger, nullable=True),
    Column("log_path", Text, nullable=True),
)

# Per kernel (or scope) name, what its timed spans add up to: the summary of the whole
# fleet is then a row a name (store/names.py). m2 is the sum of squared deviations from
# the mean (Welford), so the standard deviation keeps its precision.
span_names = Table(
    "span_names",
    metadata,
    Column("name_key", BigInteger, primary_key=True),
    Column("type", String(8), nullable=False),
    Column("name", Text, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("min", BigInteger, nullable=False),
    Column("max", BigInteger, nullable=False),
    Column("mean", Float, nullable=False),
    Column("m2", Float, nullable=False),
    Column("failed", BigInteger, nullable=False),
)
