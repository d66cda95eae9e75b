"""customer_features: time to the next purchase (p_buy_7d, p_buy_30d, days_to_next_purchase,
from the BG/NBD fit) and the customer's micro-segment (a behaviour cluster inside its stage)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NUMBERS = ("p_buy_7d", "p_buy_30d", "days_to_next_purchase")


def upgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        for name in NUMBERS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("micro_segment", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        batch.drop_column("micro_segment")
        for name in reversed(NUMBERS):
            batch.drop_column(name)
