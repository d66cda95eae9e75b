"""The system of record: one SQLModel class per table.

Identifiers chosen by the team (campaign, treatment, customer ids) are the primary keys, so logs
and exports speak the team's language. Timestamps are naive UTC. High-volume tables (event,
decision, reward, customer) are written through :mod:`orchestrator.storage.bulk`, not the ORM.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so big ids are BIGINT elsewhere.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Customer ids sort byte-wise everywhere (SQLite does by default), so batches, indexes and
# keyset pagination agree across backends and PostgreSQL range scans can use the index.
CustomerId = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")


def utcnow() -> datetime:
    """Return the current UTC time, naive (the storage convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


# --- customers and their data -------------------------------------------------------------


class Customer(SQLModel, table=True):
    __tablename__ = "customer"

    customer_id: str = Field(primary_key=True, sa_type=CustomerId)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


class CustomerAttribute(SQLModel, table=True):
    """The type of each customer attribute, declared by a plan or learned from an import."""

    __tablename__ = "customer_attribute"

    name: str = Field(primary_key=True, max_length=64)
    dtype: str = Field(max_length=16)  # bool | number | string | date
    origin: str = Field(max_length=16)  # plan | import
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


class CustomerFeatures(SQLModel, table=True):
    """Computed features per customer, written by the segmentation refresh."""

    __tablename__ = "customer_features"

    customer_id: str = Field(primary_key=True, sa_type=CustomerId)
    as_of: date
    recency_days: float | None = None
    frequency: int | None = None
    monetary: float | None = None
    tenure_days: float | None = None
    lifecycle_stage: str | None = Field(default=None, max_length=32)
    rfm_cell: str | None = Field(default=None, max_length=32)
    r_score: int | None = None
    f_score: int | None = None
    m_score: int | None = None
    p_alive: float | None = None
    expected_purchases: float | None = None
    expected_value: float | None = None
    churn_risk: float | None = None
    p_buy_7d: float | None = None
    p_buy_30d: float | None = None
    days_to_next_purchase: float | None = None
    discount_affinity: float | None = None
    mean_discount: float | None = None
    mean_order_value: float | None = None
    preferred_category: str | None = Field(default=None, max_length=64)
    preferred_channel: str | None = Field(default=None, max_length=64)
    micro_segment: str | None = Field(default=None, max_length=64)
    next_category: str | None = Field(default=None, max_length=64)
    next_category_confidence: float | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


class SegmentHistory(SQLModel, table=True):
    """A customer's membership of a segment kind (lifecycle, rfm...) over a period."""

    __tablename__ = "segment_history"
    __table_args__ = (sa.Index("ix_segment_history_customer_kind", "customer_id", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(sa_type=CustomerId)
    kind: str = Field(max_length=32)
    value: str = Field(max_length=64)
    valid_from: date
    valid_to: date | None = None


class Event(SQLModel, table=True):
    """A transaction or behavioural event; idempotent on ``source_event_id``."""

    __tablename__ = "event"
    __table_args__ = (sa.Index("ix_event_customer_time", "customer_id", "occurred_at"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    source_event_id: str = Field(max_length=128, unique=True)
    customer_id: str = Field(sa_type=CustomerId)
    occurred_at: datetime = Field(sa_type=sa.DateTime(), index=True)
    type: str = Field(max_length=32)
    amount: float = 0.0
    discount: float | None = None
    category: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=64)
    extra: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    imported_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


# --- the plan: what the marketing team decides --------------------------------------------


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    channel: str = Field(max_length=32)
    status: str = Field(default="active", max_length=16)  # active | paused | archived
    start_date: date | None = None
    end_date: date | None = None
    target: str = Field(default="true", sa_type=sa.Text)
    priority: int | None = None
    measurement_days: int = 7
    cooldown_days: int = 0
    control_fraction: float = 0.1
    measured: bool = True
    description: str | None = Field(default=None, sa_type=sa.Text)
    position: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


class Treatment(SQLModel, table=True):
    __tablename__ = "treatment"

    campaign_id: str = Field(foreign_key="campaign.id", primary_key=True, max_length=64)
    id: str = Field(primary_key=True, max_length=64)
    cost: float = 0.0
    features: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    position: int = 0
    status: str = Field(default="active", max_length=16)  # active | retired (kept for history)


class Exclusion(SQLModel, table=True):
    """Having received ``if_received`` in the last ``days`` days excludes ``exclude``."""

    __tablename__ = "exclusion"
    __table_args__ = (sa.UniqueConstraint("if_received", "exclude", name="uq_exclusion_pair"),)

    id: int | None = Field(default=None, primary_key=True)
    if_received: str = Field(max_length=64)
    exclude: str = Field(max_length=64)
    days: int


class FrequencyCap(SQLModel, table=True):
    """At most ``max_contacts`` contacts in any rolling ``per_days`` days (global or a channel)."""

    __tablename__ = "frequency_cap"
    __table_args__ = (sa.UniqueConstraint("scope", "channel", "per_days", name="uq_cap_window"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)  # global | channel
    channel: str = Field(default="", max_length=32)  # "" for the global scope
    max_contacts: int
    per_days: int


class PlanSetting(SQLModel, table=True):
    __tablename__ = "plan_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: Any = Field(default=None, sa_type=JSONType, nullable=True)


class PlanRevision(SQLModel, table=True):
    """The whole plan after each change, so any past state can be read back."""

    __tablename__ = "plan_revision"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    actor: str = Field(max_length=128)
    source: str = Field(max_length=512)
    content: str = Field(sa_type=sa.Text)
    sha256: str = Field(max_length=64)
    summary: str = Field(default="", sa_type=sa.Text)


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(), index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str = Field(max_length=256)
    before: Any = Field(default=None, sa_type=JSONType, nullable=True)
    after: Any = Field(default=None, sa_type=JSONType, nullable=True)
    revision_id: int | None = None


# --- runs, decisions, outcomes, policies ----------------------------------------------------


class Run(SQLModel, table=True):
    __tablename__ = "run"

    id: int | None = Field(default=None, primary_key=True)
    run_date: date = Field(unique=True)
    status: str = Field(max_length=16)  # running | done | failed
    started_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime())
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    owner: str = Field(default="", max_length=128)
    batches_done: int = 0
    last_customer_id: str | None = Field(default=None, max_length=128)  # resume point
    seed: int = 0
    counts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    policy_name: str = Field(default="", max_length=32)
    policy_version_id: int | None = None
    plan_revision_id: int | None = None
    forced: bool = False
    error: str | None = Field(default=None, sa_type=sa.Text)
    spec: bytes | None = Field(default=None, sa_type=sa.LargeBinary)  # RunSpec JSON it decides with
    partitions: int | None = None
    contacts: str | None = Field(default=None, max_length=16)  # state | rebuild: see contact_state
    contacts_generation: int | None = None  # the contact-state generation the run started from
    token: str | None = Field(default=None, max_length=32)  # new for every (forced) run of a date
    segments_as_of: date | None = None  # the refresh its targeting saw (customer_features.as_of)


class RunPartition(SQLModel, table=True):
    """One customer-id range ``(lo, hi]`` of a run, decided and committed on its own."""

    __tablename__ = "run_partition"

    run_date: date = Field(primary_key=True)
    part: int = Field(primary_key=True)
    lo: str | None = Field(default=None, sa_type=CustomerId)  # exclusive; None: from the start
    hi: str | None = Field(default=None, sa_type=CustomerId)  # inclusive; None: to the end
    status: str = Field(default="pending", max_length=16)  # pending | running | done
    last_customer_id: str | None = Field(default=None, sa_type=CustomerId)  # resume point
    batches_done: int = 0
    counts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    owner: str = Field(default="", max_length=128)
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    attempts: int = 0
    run_token: str | None = Field(default=None, max_length=32)  # Run.token of its run


class ContactState(SQLModel, table=True):
    """A customer's recent decisions as packed entries (``orchestrator.engine.contacts``),
    written with the decisions, so a run reads one row per customer, not the decision log."""

    __tablename__ = "contact_state"

    customer_id: str = Field(primary_key=True, sa_type=CustomerId)
    state: bytes = Field(sa_type=sa.LargeBinary)


class JourneyStateRow(SQLModel, table=True):
    """Where a customer stands in a journey; ``before``: the state before its last change."""

    __tablename__ = "journey_state"
    __table_args__ = (sa.Index("ix_journey_state_journey", "journey_id", "status"),)

    customer_id: str = Field(primary_key=True, sa_type=CustomerId)
    journey_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)  # active | exited | completed
    entered_on: date | None = None
    step: int = 0  # the next step's index
    grp: str = Field(max_length=16)  # test | control
    entries: int = 0
    changed_on: date
    before: dict[str, Any] | None = Field(default=None, sa_type=JSONType, nullable=True)


class ContactStateMark(SQLModel, table=True):
    """Which run the contact states are complete through (one row; None: rebuild them)."""

    __tablename__ = "contact_state_mark"

    id: int = Field(default=1, primary_key=True)
    through: date | None = None
    horizon_days: int = 0
    generation: int = 0  # moves whenever past decisions change outside a run
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


class Decision(SQLModel, table=True):
    """One customer's decision on one run date; the basis of uplift and off-policy learning."""

    __tablename__ = "decision"
    __table_args__ = (
        sa.UniqueConstraint("run_date", "customer_id", name="uq_decision_run_customer"),
        sa.Index("ix_decision_customer_date", "customer_id", "run_date"),
        sa.Index("ix_decision_campaign_date", "campaign_id", "run_date"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    run_date: date
    customer_id: str = Field(sa_type=CustomerId)
    campaign_id: str | None = Field(default=None, max_length=64)  # None: the policy sent nothing
    treatment_id: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=32)
    group: str = Field(max_length=16)  # test | control
    propensity: float  # P(action | context, eligible) under the policy, times split_share
    split_share: float = 1.0  # share of the test/control split this decision fell in
    reason: str = Field(max_length=16)  # priority | policy | journey
    policy_name: str = Field(default="", max_length=32)
    policy_version_id: int | None = None
    window_end: date | None = None
    batch: int = 0
    journey_id: str | None = Field(default=None, max_length=64)  # reason journey: which one
    journey_step: int | None = None  # and which step (1 = the first)


class DecisionContext(SQLModel, table=True):
    """The policy contexts of one batch's decisions: what a learner needs to replay them.

    ``matrix`` is float32 C-order bytes of shape ``(len(customer_ids), len(names))``;
    ``eligible`` is ``numpy.packbits`` of the ``(len(customer_ids), len(actions))`` bool matrix of
    the actions each customer could get (after every stage), row by row; ``actions`` are the
    labels ``campaign/treatment`` of the run date's actions, in index order.
    """

    __tablename__ = "decision_context"
    __table_args__ = (sa.UniqueConstraint("run_date", "batch", name="uq_context_run_batch"),)

    id: int | None = Field(default=None, primary_key=True)
    run_date: date
    batch: int
    names: list[str] = Field(default_factory=list, sa_type=JSONType)
    customer_ids: list[str] = Field(default_factory=list, sa_type=JSONType)
    matrix: bytes = Field(sa_type=sa.LargeBinary)
    actions: list[str] = Field(default_factory=list, sa_type=JSONType)
    eligible: bytes = Field(default=b"", sa_type=sa.LargeBinary)


class Reward(SQLModel, table=True):
    __tablename__ = "reward"

    decision_id: int = Field(sa_column=sa.Column(BigId, primary_key=True))
    value: float
    revenue: float
    cost: float
    converted: bool
    matured_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    # Days the outcome was measured over: the decision's window, or for "send nothing" until
    # the customer's next contact if that came first (None: matured before this was kept).
    window_days: int | None = None


class PolicyVersion(SQLModel, table=True):
    __tablename__ = "policy_version"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    state: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    state_version: int = 1
    status: str = Field(default="candidate", max_length=16)  # candidate|active|retired|apprentice
    trained_through: date | None = None
    trained_until: datetime | None = Field(default=None, sa_type=sa.DateTime())  # reward watermark
    n_updates: int = 0
    parent_id: int | None = None
    ope: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())


metadata = SQLModel.metadata


# --- the daemon ------------------------------------------------------------------------------


class Lease(SQLModel, table=True):
    """A named lease: the daemon that holds ``name`` (``leader``) and until when. A holder
    renews it well before ``expires_at``; anyone may take it once that has passed."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(default="", max_length=128)  # host:pid:nonce of the holding daemon
    acquired_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    renewed_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    expires_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    info: str | None = Field(default=None, sa_type=sa.Text)  # JSON: the holder's schedule


class JobRun(SQLModel, table=True):
    """One step of the daemon's day (import, segments, run, export, learn, report) for one
    date: at most one row per step and date, so a step done for a date is never done twice."""

    __tablename__ = "job_run"

    job_id: str = Field(primary_key=True, max_length=32)
    run_date: date = Field(primary_key=True)
    status: str = Field(default="running", max_length=16)  # running | done | failed | skipped
    attempts: int = 0
    holder: str = Field(default="", max_length=128)
    started_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime())
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime())
    seconds: float = 0.0
    detail: str | None = Field(default=None, sa_type=sa.Text)  # what it did, one line
    error: str | None = Field(default=None, sa_type=sa.Text)
