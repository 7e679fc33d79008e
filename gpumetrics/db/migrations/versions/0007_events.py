"""gpumon_client's events: host clocks, spans (scopes and kernels), scope samples, processes.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from gpumetrics.db.backends import ID_TYPE

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _host() -> sa.Column:
    return sa.Column("host", sa.String(255), nullable=False)


def _big(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "host_clocks",
        _host(),
        sa.Column("boot", sa.Integer, nullable=False),
        *(_big(name) for name in ("offset_ns", "max_ns", "updated_at")),
        sa.PrimaryKeyConstraint("host", "boot", name="pk_host_clocks"),
    )
    op.create_table(
        "spans",
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        _host(),
        sa.Column("boot", sa.Integer, nullable=False),
        _big("pid"),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
        *(_big(name) for name in ("key", "name_key", "start_ns")),
        *(_big(name, nullable=True) for name in ("end_ns", "duration_ns")),
        sa.Column("state", sa.String(10), nullable=False),
        *(sa.Column(f"{what}_{axis}", sa.Integer, nullable=True) for what in ("grid", "block") for axis in "xyz"),
        _big("shared_mem_bytes", nullable=True),
        sa.Column("cuda_error", sa.String(255), nullable=True),
        sa.Column("memory_begin", sa.Text, nullable=True),
        sa.Column("memory_end", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_spans"),
        sa.UniqueConstraint("host", "pid", "start_ns", "key", name="uq_spans_host_pid_start_ns_key"),
    )
    op.create_index("ix_spans_host_boot_start_ns", "spans", ["host", "boot", "start_ns"])
    op.create_index("ix_spans_name_key_duration_ns", "spans", ["name_key", "duration_ns"])
    op.create_table(
        "scope_samples",
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        _host(),
        sa.Column("boot", sa.Integer, nullable=False),
        _big("pid"),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
        _big("key"),
        _big("ts_ns"),
        sa.Column("memory", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scope_samples"),
        sa.UniqueConstraint("host", "pid", "ts_ns", "key", name="uq_scope_samples_host_pid_ts_ns_key"),
    )
    op.create_table(
        "system_samples",
        _host(),
        _big("app_key"),
        _big("ts_ns"),
        sa.Column("boot", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("host", "app_key", "ts_ns", name="pk_system_samples"),
    )
    op.create_table(
        "processes",
        _host(),
        sa.Column("boot", sa.Integer, nullable=False),
        _big("pid"),
        sa.Column("app", sa.Text, nullable=False),
        _big("first_ns"),
        _big("last_ns"),
        _big("init_ns", nullable=True),
        _big("shutdown_ns", nullable=True),
        sa.Column("log_path", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("host", "boot", "pid", name="pk_processes"),
    )
    _span_names()


def _span_names() -> None:
    op.create_table(
        "span_names",
        _big("name_key"),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        *(_big(name) for name in ("count", "total", "min", "max")),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("m2", sa.Float, nullable=False),
        _big("failed"),
        sa.PrimaryKeyConstraint("name_key", name="pk_span_names"),
    )


def downgrade() -> None:
    for table in ("span_names", "processes", "system_samples", "scope_samples", "spans", "host_clocks"):
        op.drop_table(table)
