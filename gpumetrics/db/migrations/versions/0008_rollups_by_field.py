"""An index of the rollups by kind, field and minute: a chart of every GPU (no GPU filter)
reads only its field's minutes, not every field's of the window.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_rollups_metric_field_minute", "rollups", ["metric", "field", "minute"])


def downgrade() -> None:
    op.drop_index("ix_rollups_metric_field_minute", "rollups")
