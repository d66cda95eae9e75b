"""customer_features: next_category and next_category_confidence (basket analysis: the best
category not yet bought, from what customers of the same micro-segment went on to buy)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        batch.add_column(sa.Column("next_category", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("next_category_confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        batch.drop_column("next_category_confidence")
        batch.drop_column("next_category")
