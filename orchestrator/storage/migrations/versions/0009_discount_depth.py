"""customer_features: mean_discount and mean_order_value (how deep the discounts a customer
bought with, and how large their orders; the layers of `orch report customers`)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = ("mean_discount", "mean_order_value")


def upgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customer_features") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
