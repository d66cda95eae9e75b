"""reward.window_days: the outcome window a reward was measured over

A "send nothing" decision blocks nothing, so the customer may be contacted again inside its
outcome window; its outcome is then measured only until that contact (see
``orchestrator.rewards``), and the learners need the length actually measured.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reward") as batch:
        batch.add_column(sa.Column("window_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reward") as batch:
        batch.drop_column("window_days")
