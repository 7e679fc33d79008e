"""Process details from the crawler; file-tailing checkpoints and job runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gpumetrics.db.backends import ID_TYPE

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = ID_TYPE
PROCESS_DETAILS = [
    ("process_name", sa.String(255)),
    ("app_name", sa.String(255)),
    ("kernel_name", sa.String(255)),
    ("tag", sa.String(255)),
    ("scope_mem_delta_mib", sa.BigInteger()),
]


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        for name, kind in PROCESS_DETAILS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "tail_files",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        *(
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "device",
                "inode",
                "position",
                "line",
                "lines_read",
                "records_stored",
                "duplicates",
                "lines_rejected",
                "updated_at",
            )
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tail_files"),
        sa.UniqueConstraint("host", "path", name="uq_tail_files_host_path"),
    )
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_runs"),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("tail_files")
    with op.batch_alter_table("records") as batch:
        for name, _ in PROCESS_DETAILS:
            batch.drop_column(name)
