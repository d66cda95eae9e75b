"""Read and write the plan state (campaigns, treatments, caps, exclusions, settings)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select

from orchestrator.plan import (
    CampaignSpec,
    CapSpec,
    ExclusionSpec,
    JourneySpec,
    Plan,
    PlanSettings,
    TreatmentSpec,
    plan_to_yaml,
)
from orchestrator.plan_diff import Change
from orchestrator.storage.models import (
    AuditLog,
    Campaign,
    CustomerAttribute,
    Exclusion,
    FrequencyCap,
    PlanRevision,
    PlanSetting,
    Treatment,
    utcnow,
)

SETTING_KEYS = (
    "timezone",
    "run_at",
    "global_control_fraction",
    "allow_no_send",
    "no_send_measurement_days",
    "salt",
    "policy",
    "bands",
    "currency",
    "segments",
    "attribute_ranges",
)


JOURNEYS_KEY = "journeys"


def plan_segments(session: Session) -> dict[str, Any]:
    """The plan's ``settings.segments`` (the segmentation settings; empty: the defaults)."""
    row = session.get(PlanSetting, "segments")
    return dict(row.value) if row is not None and isinstance(row.value, dict) else {}


def plan_currency(session: Session) -> str | None:
    """The plan's ``settings.currency`` (None when the plan names none)."""
    row = session.get(PlanSetting, "currency")
    return str(row.value) if row is not None and row.value else None


def plan_today(session: Session, now: datetime | None = None) -> date:
    """Today in the plan's time zone (the date the daemon runs), from ``now`` (UTC, naive or
    aware; default the clock)."""
    row = session.get(PlanSetting, "timezone")
    tz = ZoneInfo(str(row.value)) if row is not None and row.value else ZoneInfo("UTC")
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).date()


def read_plan(session: Session, *, include_archived: bool = True) -> Plan:
    """The plan as the database holds it now (campaigns in plan order)."""
    settings_rows = {s.key: s.value for s in session.exec(select(PlanSetting))}
    settings = PlanSettings.model_validate(
        {k: v for k, v in settings_rows.items() if k in SETTING_KEYS}
    )
    campaigns = session.exec(select(Campaign).order_by(col(Campaign.position), col(Campaign.id)))
    treatments: dict[str, list[Treatment]] = {}
    for t in session.exec(
        select(Treatment)
        .where(col(Treatment.status) == "active")
        .order_by(col(Treatment.position), col(Treatment.id))
    ):
        treatments.setdefault(t.campaign_id, []).append(t)
    specs = [
        _campaign_spec(c, treatments.get(c.id, []))
        for c in campaigns
        if include_archived or c.status != "archived"
    ]
    caps = [
        CapSpec(
            scope=c.scope,  # type: ignore[arg-type]
            channel=c.channel or None,
            max=c.max_contacts,
            per_days=c.per_days,
        )
        for c in session.exec(select(FrequencyCap).order_by(col(FrequencyCap.id)))
    ]
    exclusions = [
        ExclusionSpec(if_received=x.if_received, exclude=x.exclude, days=x.days)
        for x in session.exec(select(Exclusion).order_by(col(Exclusion.id)))
    ]
    attributes = {
        a.name: a.dtype
        for a in session.exec(
            select(CustomerAttribute)
            .where(col(CustomerAttribute.origin) == "plan")
            .order_by(col(CustomerAttribute.name))
        )
    }
    journeys = [JourneySpec.model_validate(j) for j in settings_rows.get(JOURNEYS_KEY) or []]
    return Plan.model_construct(
        version=1,
        settings=settings,
        attributes=attributes,
        caps=caps,
        campaigns=specs,
        exclusions=exclusions,
        journeys=journeys,
    )


def _campaign_spec(c: Campaign, treatments: list[Treatment]) -> CampaignSpec:
    return CampaignSpec.model_construct(
        id=c.id,
        name=c.name,
        channel=c.channel,
        status=c.status,
        start=c.start_date,
        end=c.end_date,
        target=c.target,
        priority=c.priority,
        measurement_days=c.measurement_days,
        cooldown_days=c.cooldown_days,
        control_fraction=c.control_fraction,
        measured=c.measured,
        description=c.description,
        treatments=[
            TreatmentSpec.model_construct(
                id=t.id, cost=t.cost, features=dict(t.features), payload=dict(t.payload)
            )
            for t in treatments
        ],
    )


def attribute_types(session: Session, *, origin: str | None = None) -> dict[str, str]:
    """Customer attribute types known to the database (``origin`` plan or import)."""
    query = select(CustomerAttribute)
    if origin:
        query = query.where(col(CustomerAttribute.origin) == origin)
    return {a.name: a.dtype for a in session.exec(query)}


def with_archived(current: Plan, new: Plan) -> Plan:
    """``new`` plus every stored campaign it leaves out, marked archived (history is kept)."""
    listed = {c.id for c in new.campaigns}
    kept = [
        c.model_copy(update={"status": "archived"}) for c in current.campaigns if c.id not in listed
    ]
    return new.model_copy(update={"campaigns": list(new.campaigns) + kept})


@dataclass
class ApplyResult:
    changes: list[Change]
    revision_id: int | None = None
    audit_ids: list[int] = field(default_factory=list)
    plan: Plan | None = None  # the plan as applied (or as it would be, on a dry run)


def write_plan(
    session: Session,
    old: Plan,
    new: Plan,
    changes: list[Change],
    *,
    actor: str,
    source: str,
    action: str,
    target: str,
) -> ApplyResult:
    """Make the database hold ``new`` (a complete plan, archived campaigns included)."""
    if not changes:
        return ApplyResult(changes=[])
    now = utcnow()
    _write_settings(session, new)
    _write_attributes(session, new, now)
    _write_campaigns(session, old, new, now)
    session.exec(delete(FrequencyCap))
    session.exec(delete(Exclusion))
    session.flush()
    for cap in new.caps:
        session.add(
            FrequencyCap(
                scope=cap.scope,
                channel=cap.channel or "",
                max_contacts=cap.max,
                per_days=cap.per_days,
            )
        )
    for x in new.exclusions:
        session.add(Exclusion(if_received=x.if_received, exclude=x.exclude, days=x.days))
    session.flush()

    content = plan_to_yaml(read_plan(session, include_archived=True))
    revision = PlanRevision(
        created_at=now,
        actor=actor,
        source=source,
        content=content,
        sha256=hashlib.sha256(content.encode()).hexdigest(),
        summary="\n".join(str(c) for c in changes),
    )
    session.add(revision)
    session.flush()
    entry = AuditLog(
        at=now,
        actor=actor,
        action=action,
        target=target,
        before={c.path: c.before for c in changes},
        after={c.path: c.after for c in changes},
        revision_id=revision.id,
    )
    session.add(entry)
    session.flush()
    assert revision.id is not None and entry.id is not None
    return ApplyResult(changes=changes, revision_id=revision.id, audit_ids=[entry.id])


def _write_settings(session: Session, plan: Plan) -> None:
    values: dict[str, Any] = plan.settings.model_dump(mode="json")
    # Journeys are kept whole, as one JSON value (they are read with the plan, never queried).
    values[JOURNEYS_KEY] = [j.model_dump(mode="json") for j in plan.journeys]
    for key in (*SETTING_KEYS, JOURNEYS_KEY):
        row = session.get(PlanSetting, key)
        if row is None:
            session.add(PlanSetting(key=key, value=values[key]))
        elif row.value != values[key]:
            row.value = values[key]
            session.add(row)


def _write_attributes(session: Session, plan: Plan, now: datetime) -> None:
    stored = {a.name: a for a in session.exec(select(CustomerAttribute))}
    for name, dtype in plan.attributes.items():
        row = stored.get(name)
        if row is None:
            session.add(CustomerAttribute(name=name, dtype=dtype, origin="plan", updated_at=now))
        elif (row.dtype, row.origin) != (dtype, "plan"):
            row.dtype, row.origin, row.updated_at = dtype, "plan", now
            session.add(row)
    for name, row in stored.items():
        # An attribute the plan no longer declares stays known if data was imported for it.
        if row.origin == "plan" and name not in plan.attributes:
            row.origin, row.updated_at = "import", now
            session.add(row)


def _write_campaigns(session: Session, old: Plan, new: Plan, now: datetime) -> None:
    stored = {c.id: c for c in session.exec(select(Campaign))}
    old_specs = {c.id: c for c in old.campaigns}
    for position, spec in enumerate(new.campaigns):
        if old_specs.get(spec.id) == spec and stored[spec.id].position == position:
            continue
        row = stored.get(spec.id) or Campaign(id=spec.id, name=spec.name, channel=spec.channel)
        row.name, row.channel, row.status = spec.name, spec.channel, spec.status
        row.start_date, row.end_date, row.target = spec.start, spec.end, spec.target
        row.priority, row.measurement_days = spec.priority, spec.measurement_days
        row.cooldown_days, row.control_fraction = spec.cooldown_days, spec.control_fraction
        row.measured, row.description = spec.measured, spec.description
        row.position, row.updated_at = position, now
        session.add(row)
        session.flush()
        _write_treatments(session, spec)


def _write_treatments(session: Session, spec: CampaignSpec) -> None:
    stored = {
        t.id: t
        for t in session.exec(select(Treatment).where(col(Treatment.campaign_id) == spec.id))
    }
    for position, t in enumerate(spec.treatments):
        row = stored.get(t.id) or Treatment(campaign_id=spec.id, id=t.id)
        row.cost, row.features, row.payload = t.cost, dict(t.features), dict(t.payload)
        row.position, row.status = position, "active"
        session.add(row)
    # Removed treatments are retired, not deleted: decisions that used them keep their cost.
    listed = {t.id for t in spec.treatments}
    for tid, row in stored.items():
        if tid not in listed and row.status != "retired":
            row.status = "retired"
            session.add(row)


def audit_entries(session: Session, *, since: datetime | None = None) -> list[AuditLog]:
    query = select(AuditLog).order_by(col(AuditLog.at), col(AuditLog.id))
    if since is not None:
        query = query.where(col(AuditLog.at) >= since)
    return list(session.exec(query))


def add_audit(
    session: Session, *, actor: str, action: str, target: str, before: Any, after: Any
) -> AuditLog:
    entry = AuditLog(actor=actor, action=action, target=target, before=before, after=after)
    session.add(entry)
    session.flush()
    return entry


def lock_plan(session: Session) -> None:
    """Serialize concurrent admin changes on PostgreSQL (SQLite serializes writers itself)."""
    if session.get_bind().dialect.name == "postgresql":
        session.exec(sa.text("SELECT pg_advisory_xact_lock(4242001)"))  # type: ignore[call-overload]
