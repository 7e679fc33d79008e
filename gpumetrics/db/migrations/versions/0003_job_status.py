"""Job status in the database: who runs each job, and each tailed file's bytes behind.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tail_files") as batch:
        batch.add_column(sa.Column("bytes_behind", sa.BigInteger, nullable=True))
    op.create_table(
        "job_runners",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("runner", sa.String(255), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_runners"),
    )


def downgrade() -> None:
    op.drop_table("job_runners")
    with op.batch_alter_table("tail_files") as batch:
        batch.drop_column("bytes_behind")
