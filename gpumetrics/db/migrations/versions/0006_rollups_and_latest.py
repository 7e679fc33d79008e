"""Minute rollups and the newest record of each GPU and kind, made from the records already stored;
the marks table, where retention notes how far it cut the records.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from gpumetrics.db.backends import ID_TYPE

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MINUTE = 60_000_000
# The measured columns of each kind at this revision.
MEASURED = {
    "memory": ["total_mib", "used_mib", "free_mib"],
    "utilization": ["gpu_percent", "memory_percent"],
    "temperature": ["celsius"],
    "power": ["watts"],
    "clocks": ["graphics_mhz", "memory_mhz", "sm_mhz"],
    "process": ["used_mib", "scope_mem_delta_mib"],
}
NUMBERS = ["total_mib", "used_mib", "free_mib", "gpu_percent", "memory_percent", "celsius", "watts"]
NUMBERS += ["graphics_mhz", "memory_mhz", "sm_mhz"]
TEXTS = ["process_name", "app_name", "kernel_name", "tag"]
COLUMNS = [*NUMBERS, "pid", *TEXTS, "scope_mem_delta_mib"]


def _create_tables() -> None:
    op.create_table(
        "rollups",
        sa.Column("gpu_id", ID_TYPE, sa.ForeignKey("gpus.id", name="fk_rollups_gpu_id_gpus"), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in ("count",)),
        *(sa.Column(name, sa.Float, nullable=False) for name in ("sum", "min", "max")),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in ("first_ts", "last_ts")),
        sa.Column("last", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("gpu_id", "metric", "field", "minute", name="pk_rollups"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_rollups_minute", "rollups", ["minute"])
    kinds = {name: sa.Float for name in NUMBERS} | {name: sa.Text for name in TEXTS}
    kinds |= {"pid": sa.BigInteger, "scope_mem_delta_mib": sa.BigInteger}
    op.create_table(
        "latest",
        sa.Column("gpu_id", ID_TYPE, sa.ForeignKey("gpus.id", name="fk_latest_gpu_id_gpus"), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("pid_key", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        *(sa.Column(name, kinds[name](), nullable=True) for name in COLUMNS),
        sa.PrimaryKeyConstraint("gpu_id", "metric", "pid_key", name="pk_latest"),
        sqlite_with_rowid=False,
    )


def _create_marks() -> None:
    op.create_table(
        "marks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_marks"),
    )


def _backfill_rollups(metric: str, column: str) -> None:
    minute = f"(ts - ((ts % {MINUTE}) + {MINUTE}) % {MINUTE})"
    op.execute(
        f"""
        INSERT INTO rollups (gpu_id, metric, field, minute, count, sum, min, max, first_ts, last_ts, last)
        SELECT g.gpu_id, g.metric, '{column}', g.minute, g.n, g.total, g.low, g.high, g.first_ts, g.last_ts,
               (SELECT max(r.{column}) FROM records r
                WHERE r.gpu_id = g.gpu_id AND r.metric = g.metric AND r.ts = g.last_ts AND r.{column} IS NOT NULL)
        FROM (SELECT gpu_id, metric, {minute} AS minute, count({column}) AS n, sum({column}) AS total,
                     min({column}) AS low, max({column}) AS high, min(ts) AS first_ts, max(ts) AS last_ts
              FROM records WHERE metric = '{metric}' AND {column} IS NOT NULL
              GROUP BY gpu_id, metric, {minute}) AS g
        """
    )


def _backfill_latest() -> None:
    names = ", ".join(COLUMNS)
    op.execute(
        f"""
        INSERT INTO latest (gpu_id, metric, pid_key, ts, {names})
        SELECT r.gpu_id, r.metric, coalesce(r.pid, -1), r.ts, {", ".join(f"r.{name}" for name in COLUMNS)}
        FROM records r
        JOIN (SELECT gpu_id, metric, max(ts) AS ts FROM records GROUP BY gpu_id, metric) AS n
          ON r.gpu_id = n.gpu_id AND r.metric = n.metric AND r.ts = n.ts
        """
    )


def upgrade() -> None:
    _create_tables()
    _create_marks()
    for metric, columns in MEASURED.items():
        for column in columns:
            _backfill_rollups(metric, column)
    _backfill_latest()


def downgrade() -> None:
    op.drop_table("marks")
    op.drop_table("latest")
    op.drop_table("rollups")
