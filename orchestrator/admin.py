"""Admin use-cases: validate, diff, apply and export the plan; quick edits of single rules.

Every change, from a plan file or an imperative command, goes through the same path: build the
complete new plan, check it as a whole, diff it against the stored one, write it in one
transaction with a plan revision and an audit-log entry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import CampaignNotFound, InputError, NotFound
from orchestrator.plan import (
    CampaignSpec,
    CapSpec,
    ExclusionSpec,
    Plan,
    PlanSource,
    check_plan,
    load_plan_file,
    plan_to_yaml,
)
from orchestrator.plan_diff import Change, diff_plans
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.models import AuditLog
from orchestrator.storage.plan_repo import (
    ApplyResult,
    attribute_types,
    audit_entries,
    lock_plan,
    read_plan,
    with_archived,
    write_plan,
)
from policies import POLICIES


def validate_plan(
    plan: Plan, source: PlanSource | None = None, *, engine: sa.Engine | None = None
) -> Plan:
    """Check a plan; with an engine, against the stored attributes and archived campaigns."""
    known: dict[str, str] = {}
    full = plan
    if engine is not None:
        require_schema(engine)
        with session_scope(engine) as session:
            known = attribute_types(session, origin="import")
            # An attribute the plan declared and customers were then imported with holds
            # values of its declared type: a new type must agree with them too.
            for name, dtype in attribute_types(session, origin="plan").items():
                wanted = plan.attributes.get(name)
                if wanted is not None and wanted != dtype and _has_values(session, name):
                    known[name] = dtype
            full = with_archived(read_plan(session), plan)
    check_plan(full, source, known_attributes=known, policy_names=POLICIES)
    return full


def _has_values(session: Any, name: str) -> bool:
    """Whether any stored customer has a value of attribute ``name``."""
    from orchestrator.reports.columnar import json_field

    conn = session.connection()
    field = json_field(conn, "attributes", name)
    sql = f"SELECT 1 FROM customer WHERE {field} IS NOT NULL LIMIT 1"
    return conn.execute(sa.text(sql)).first() is not None


def channel_warnings(plan: Plan) -> list[str]:
    """A channel that only one campaign uses and no cap names, and that resembles another: most
    often a typo (``emial``), which no frequency cap on the real channel would then count; and a
    cap on a channel no campaign sends on, which limits nothing.

    >>> from orchestrator.plan import Plan
    >>> t = [{"id": "a"}]
    >>> p = Plan.model_validate({"campaigns": [
    ...     {"id": "x", "channel": "email", "treatments": t},
    ...     {"id": "y", "channel": "email", "treatments": t},
    ...     {"id": "z", "channel": "emial", "treatments": t}],
    ...     "caps": [{"scope": "global", "max": 2, "per_days": 7}]})
    >>> [w.split(": ", 1)[1] for w in channel_warnings(p)]  # doctest: +NORMALIZE_WHITESPACE
    ["channel 'emial' is used by no other campaign and named by no cap (did you mean 'email'?)"]
    """
    live = [c for c in plan.campaigns if c.status != "archived"]
    used: dict[str, list[str]] = {}
    for c in live:
        used.setdefault(c.channel, []).append(c.id)
    capped = {cap.channel for cap in plan.caps if cap.channel}
    if len(used) + len(capped - set(used)) < 2:
        return []  # one channel in the whole plan: nothing to be mistaken for
    out = []
    for channel, ids in used.items():
        if len(ids) == 1 and channel not in capped:
            others = sorted((set(used) | capped) - {channel})
            close = difflib.get_close_matches(channel, others, n=1, cutoff=0.6)
            if close:  # a lone channel unlike any other (one SMS campaign) is no typo
                out.append(
                    f"campaign {ids[0]!r}: channel {channel!r} is used by no other campaign and "
                    f"named by no cap (did you mean {close[0]!r}?)"
                )
    for channel in sorted(capped - set(used)):
        close = difflib.get_close_matches(channel, sorted(used), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out.append(f"cap on channel {channel!r}: no campaign sends on it, it limits nothing{hint}")
    return out


def plan_warnings(plan: Plan, engine: sa.Engine | None) -> list[str]:
    """What is allowed but probably wrong: a channel only one campaign uses and no cap names
    (:func:`channel_warnings`); a journey entered or left on an event type that no imported
    event has (a typo, or events not imported yet)."""
    out = channel_warnings(plan)
    if engine is None or not plan.journeys:
        return out
    with engine.connect() as conn:
        known = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT type FROM event"))}
    for j in plan.journeys:
        for name, trigger in (("entry", j.entry), ("exit", j.exit)):
            if trigger is not None and trigger.event and trigger.event not in known:
                close = difflib.get_close_matches(trigger.event, sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                seen = ", ".join(sorted(known)) or "none yet"
                out.append(
                    f"journey {j.id!r} {name}: no event of type {trigger.event!r} was ever "
                    f"imported ({hint}types seen: {seen})"
                )
    return out


def validate_plan_file(path: str | Path, *, engine: sa.Engine | None = None) -> Plan:
    plan, source = load_plan_file(path)
    validate_plan(plan, source, engine=engine)
    return plan


def diff_plan_file(engine: sa.Engine, path: str | Path) -> list[Change]:
    """What ``orch plan apply`` of this file would change."""
    plan, source = load_plan_file(path)
    full = validate_plan(plan, source, engine=engine)
    with session_scope(engine) as session:
        return diff_plans(read_plan(session), full)


def apply_plan_file(
    engine: sa.Engine, path: str | Path, *, actor: str, dry_run: bool = False
) -> ApplyResult:
    """Make the stored plan equal to the file: one transaction, one revision, one audit entry."""
    plan, source = load_plan_file(path)
    validate_plan(plan, source, engine=engine)
    return _replace_plan(
        engine,
        lambda current: with_archived(current, plan),
        actor=actor,
        source=str(path),
        action="plan.apply",
        target=str(path),
        dry_run=dry_run,
    )


def export_plan(engine: sa.Engine, *, include_archived: bool = False) -> str:
    require_schema(engine)
    with session_scope(engine) as session:
        return plan_to_yaml(read_plan(session, include_archived=include_archived))


def current_plan(engine: sa.Engine, *, include_archived: bool = True) -> Plan:
    require_schema(engine)
    with session_scope(engine) as session:
        return read_plan(session, include_archived=include_archived)


def _replace_plan(
    engine: sa.Engine,
    build: Callable[[Plan], Plan],
    *,
    actor: str,
    source: str,
    action: str,
    target: str,
    dry_run: bool = False,
) -> ApplyResult:
    require_schema(engine)
    with session_scope(engine) as session:
        lock_plan(session)
        current = read_plan(session)
        new = build(current)
        check_plan(
            new,
            known_attributes=attribute_types(session, origin="import"),
            policy_names=POLICIES,
        )
        changes = diff_plans(current, new)
        if dry_run:
            return ApplyResult(changes=changes, plan=new)
        result = write_plan(
            session, current, new, changes, actor=actor, source=source, action=action, target=target
        )
        result.plan = new
        return result


def _edit(
    engine: sa.Engine, edit: Callable[[Plan], None], *, actor: str, action: str, target: str
) -> ApplyResult:
    def build(current: Plan) -> Plan:
        new = current.model_copy(deep=True)
        edit(new)
        return new

    return _replace_plan(
        engine, build, actor=actor, source=f"orch {action}", action=action, target=target
    )


def _campaign(plan: Plan, campaign_id: str) -> CampaignSpec:
    camp = plan.campaign(campaign_id)
    if camp is None:
        raise CampaignNotFound(campaign_id)
    return camp


# --- campaigns -----------------------------------------------------------------------------


def set_campaign_status(
    engine: sa.Engine, campaign_id: str, status: str, *, actor: str
) -> ApplyResult:
    """Pause, resume (back to active) or archive one campaign."""
    verb = {"paused": "pause", "active": "resume", "archived": "archive"}[status]

    def edit(plan: Plan) -> None:
        _campaign(plan, campaign_id).status = status  # type: ignore[assignment]

    return _edit(engine, edit, actor=actor, action=f"campaign.{verb}", target=campaign_id)


def set_priority(
    engine: sa.Engine, campaign_id: str, priority: int | None, *, actor: str
) -> ApplyResult:
    if priority is not None and priority < 1:
        raise InputError(f"priority must be 1 or more (lower wins), got {priority}")

    def edit(plan: Plan) -> None:
        camp = _campaign(plan, campaign_id)
        holder = next(
            (
                c.id
                for c in plan.campaigns
                if c.priority == priority and c.id != campaign_id and c.status != "archived"
            ),
            None,
        )
        if priority is not None and holder is not None:
            raise InputError(
                f"priority {priority} is already given to {holder!r}; priorities must be "
                f"distinct (lower wins): clear or move {holder!r} first"
            )
        camp.priority = priority

    action = "priority.set" if priority is not None else "priority.clear"
    return _edit(engine, edit, actor=actor, action=action, target=campaign_id)


# --- exclusions ----------------------------------------------------------------------------


def add_exclusion(
    engine: sa.Engine, if_received: str, exclude: str, days: int, *, actor: str
) -> ApplyResult:
    """Add (or change the days of) the rule: received ``if_received`` excludes ``exclude``."""
    try:
        spec = ExclusionSpec(if_received=if_received, exclude=exclude, days=days)
    except ValueError as exc:
        raise InputError(f"exclusion {if_received} -> {exclude}: {_first_error(exc)}") from None

    def edit(plan: Plan) -> None:
        for cid in (if_received, exclude):
            _campaign(plan, cid)
        rest = [x for x in plan.exclusions if (x.if_received, x.exclude) != (if_received, exclude)]
        plan.exclusions = [*rest, spec]

    return _edit(
        engine, edit, actor=actor, action="exclusion.add", target=f"{if_received}->{exclude}"
    )


def remove_exclusion(
    engine: sa.Engine, if_received: str, exclude: str, *, actor: str
) -> ApplyResult:
    def edit(plan: Plan) -> None:
        rest = [x for x in plan.exclusions if (x.if_received, x.exclude) != (if_received, exclude)]
        if len(rest) == len(plan.exclusions):
            raise NotFound(f"no exclusion {if_received!r} -> {exclude!r}")
        plan.exclusions = rest

    return _edit(
        engine, edit, actor=actor, action="exclusion.remove", target=f"{if_received}->{exclude}"
    )


# --- caps ----------------------------------------------------------------------------------


def set_cap(
    engine: sa.Engine, *, channel: str | None, max_contacts: int, per_days: int, actor: str
) -> ApplyResult:
    """Set the cap of a channel (or the global one when ``channel`` is None) over a window."""
    try:
        spec = CapSpec(
            scope="channel" if channel else "global",
            channel=channel,
            max=max_contacts,
            per_days=per_days,
        )
    except ValueError as exc:
        raise InputError(f"cap {channel or 'global'}: {_first_error(exc)}") from None

    def edit(plan: Plan) -> None:
        plan.caps = [c for c in plan.caps if c.key != spec.key] + [spec]

    return _edit(engine, edit, actor=actor, action="cap.set", target=_cap_target(spec.key))


def remove_cap(engine: sa.Engine, *, channel: str | None, per_days: int, actor: str) -> ApplyResult:
    key = ("channel" if channel else "global", channel or "", per_days)

    def edit(plan: Plan) -> None:
        rest = [c for c in plan.caps if c.key != key]
        if len(rest) == len(plan.caps):
            raise NotFound(f"no {channel or 'global'} cap over {per_days} days")
        plan.caps = rest

    return _edit(engine, edit, actor=actor, action="cap.remove", target=_cap_target(key))


def _cap_target(key: tuple[str, str, int]) -> str:
    return f"{key[1] or 'global'}/{key[2]}d"


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return f"{field}: {str(first['msg']).removeprefix('Value error, ')}"
    return str(exc)


# --- audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    changes: list[str]
    revision_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "changes": self.changes,
            "revision_id": self.revision_id,
        }


def list_audit(engine: sa.Engine, *, since: datetime | None = None) -> list[AuditRow]:
    require_schema(engine)
    with session_scope(engine) as session:
        return [_audit_row(e) for e in audit_entries(session, since=since)]


def _audit_row(e: AuditLog) -> AuditRow:
    before = e.before if isinstance(e.before, dict) else {}
    after = e.after if isinstance(e.after, dict) else {}
    changes = []
    for path in list(before) + [p for p in after if p not in before]:
        old, new = before.get(path), after.get(path)
        if old is None:
            changes.append(f"+ {path}" + (f": {new}" if new is not None else ""))
        elif new is None:
            changes.append(f"- {path}")
        else:
            changes.append(f"~ {path}: {old} -> {new}")
    assert e.id is not None
    return AuditRow(e.id, e.at, e.actor, e.action, e.target, changes, e.revision_id)
