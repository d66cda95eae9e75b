"""journeys: decision.journey_id / journey_step, and journey_state

A decision made by a journey step names the journey and the step (reason ``journey``), so
uplift reports can be cut by journey and step. ``journey_state`` holds where each customer
stands in each journey (entered on, next step, test or control, status), written in the same
transaction as the decisions; ``before`` keeps the state prior to the last change so a forced
rerun of the latest date can put it back.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CustomerId = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("decision") as batch:
        batch.add_column(sa.Column("journey_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("journey_step", sa.Integer(), nullable=True))
    op.create_table(
        "journey_state",
        sa.Column("customer_id", CustomerId, primary_key=True),
        sa.Column("journey_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("grp", sa.String(16), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("changed_on", sa.Date(), nullable=False),
        sa.Column("before", JSONType, nullable=True),
    )
    op.create_index("ix_journey_state_journey", "journey_state", ["journey_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_journey_state_journey", table_name="journey_state")
    op.drop_table("journey_state")
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("journey_step")
        batch.drop_column("journey_id")
