"""The crawler's free text (process, app and kernel names, tags) up to 65,536 characters.

Revision ID: 0004
Revises: 0003

On SQLite the records table is rebuilt (batch mode), once, which drops the expression
index of the records' identity (SQLite's reflection cannot read it): it is made again.
On PostgreSQL the columns change type in place and the index stays.
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TEXTS = ("process_name", "app_name", "kernel_name", "tag")


def _identity_index() -> None:
    columns = ["gpu_id", "metric", "ts", sa.text("coalesce(pid, -1)")]
    op.create_index("uq_records_identity", "records", columns, unique=True, if_not_exists=True)


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        with op.batch_alter_table("records") as batch:
            for name in TEXTS:
                batch.alter_column(name, type_=new, existing_type=old, existing_nullable=True)
    _identity_index()


def upgrade() -> None:
    _retype(sa.String(255), sa.Text())


def downgrade() -> None:
    _retype(sa.Text(), sa.String(255))
