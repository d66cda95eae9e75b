"""run_partition: a run in customer-id ranges, each with its own resume point; run.spec;
contact_state: each customer's recent decisions, one row per customer

A run is split into partitions (customer-id ranges) that can be decided by different worker
processes; each partition commits its decisions together with its own checkpoint, so a worker
that dies loses only its uncommitted batch. ``run.spec`` keeps what the run decides with (plan,
policy state, seed) so a resumed run decides with the same spec it started with.
``contact_state`` keeps each customer's recent decisions as one packed row, maintained with the
decisions; ``contact_state_mark`` says which run it is complete through.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CustomerId = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "run_partition",
        sa.Column("run_date", sa.Date(), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("lo", CustomerId, nullable=True),
        sa.Column("hi", CustomerId, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_customer_id", CustomerId, nullable=True),
        sa.Column("batches_done", sa.Integer(), nullable=False),
        sa.Column("counts", JSONType, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_token", sa.String(32), nullable=True),
    )
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("spec", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("partitions", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("contacts", sa.String(16), nullable=True))
        batch.add_column(sa.Column("contacts_generation", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("token", sa.String(32), nullable=True))
    op.create_table(
        "contact_state",
        sa.Column("customer_id", CustomerId, primary_key=True),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "contact_state_mark",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("through", sa.Date(), nullable=True),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("contact_state_mark")
    op.drop_table("contact_state")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("token")
        batch.drop_column("contacts_generation")
        batch.drop_column("contacts")
        batch.drop_column("partitions")
        batch.drop_column("spec")
    op.drop_table("run_partition")
