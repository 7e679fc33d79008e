"""Records and GPUs: the schema of the core service.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from gpumetrics.db.backends import ID_TYPE

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = ID_TYPE
MEASURES = [
    ("total_mib", sa.Float),
    ("used_mib", sa.Float),
    ("free_mib", sa.Float),
    ("gpu_percent", sa.Float),
    ("memory_percent", sa.Float),
    ("celsius", sa.Float),
    ("watts", sa.Float),
    ("graphics_mhz", sa.Float),
    ("memory_mhz", sa.Float),
    ("sm_mhz", sa.Float),
    ("pid", sa.BigInteger),
]


def upgrade() -> None:
    op.create_table(
        "gpus",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        sa.Column("gpu_index", sa.Integer, nullable=True),
        sa.Column("uuid", sa.String(255), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gpus"),
    )
    op.create_index("ix_gpus_host_gpu_index", "gpus", ["host", "gpu_index"], unique=True)
    op.create_index("ix_gpus_host_uuid", "gpus", ["host", "uuid"])
    op.create_table(
        "records",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("gpu_id", Id, sa.ForeignKey("gpus.id", name="fk_records_gpu_id_gpus"), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        *(sa.Column(name, kind(), nullable=True) for name, kind in MEASURES),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
    )
    op.create_index(
        "uq_records_identity",
        "records",
        ["gpu_id", "metric", "ts", sa.text("coalesce(pid, -1)")],
        unique=True,
    )
    op.create_index("ix_records_ts", "records", ["ts"])


def downgrade() -> None:
    op.drop_table("records")
    op.drop_table("gpus")
