"""Tailed files known by their path and the fingerprint of their head, not by the hostname.

Revision ID: 0005
Revises: 0004

The checkpoints of tail_files were unique by (host, path); they become unique by (path,
fingerprint), with a checksum of the bytes before the read position and the time a
rotated file was read to its end. The rows already there keep their host and get no
fingerprint: the tailer of that host takes each over when it finds the same file (same
device and inode) at the path, so an upgrade reads nothing again. tail_paths holds what
each host's tailer last found at each path (ok, missing, unreadable), for /health.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tail_files") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("position_sum", sa.String(64), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.BigInteger, nullable=True))
        batch.drop_constraint("uq_tail_files_host_path", type_="unique")
        batch.create_unique_constraint("uq_tail_files_path_fingerprint", ["path", "fingerprint"])
    op.create_table(
        "tail_paths",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("host", "path", name="pk_tail_paths"),
    )


def downgrade() -> None:
    """Back to one checkpoint per (host, path): the newest row of each is kept."""
    op.drop_table("tail_paths")
    op.execute(
        "DELETE FROM tail_files WHERE id NOT IN"
        " (SELECT newest FROM (SELECT max(id) AS newest FROM tail_files GROUP BY host, path) AS kept)"
    )
    with op.batch_alter_table("tail_files") as batch:
        batch.drop_constraint("uq_tail_files_path_fingerprint", type_="unique")
        batch.create_unique_constraint("uq_tail_files_host_path", ["host", "path"])
        batch.drop_column("finished_at")
        batch.drop_column("position_sum")
        batch.drop_column("fingerprint")
