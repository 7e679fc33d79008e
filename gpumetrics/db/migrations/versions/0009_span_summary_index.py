"""An index for the kernel summary of one host or process: (host, name_key, duration_ns) in
order for the medians, with pid and cuda_error, so that it never reads a table row.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = ["host", "name_key", "duration_ns", "pid", "cuda_error"]


def upgrade() -> None:
    op.create_index("ix_spans_host_name_key_duration_ns", "spans", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_spans_host_name_key_duration_ns", table_name="spans")
