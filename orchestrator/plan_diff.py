"""What changes between two plans, as a list of readable changes (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.plan import CampaignSpec, Plan


@dataclass(frozen=True)
class Change:
    """One difference: ``op`` is ``add``, ``remove`` or ``change``; ``path`` names the thing."""

    op: str
    path: str
    before: Any = None
    after: Any = None

    def __str__(self) -> str:
        if self.op == "add":
            return f"+ {self.path}" + (f": {self.after}" if self.after is not None else "")
        if self.op == "remove":
            return f"- {self.path}"
        return f"~ {self.path}: {_show(self.before)} -> {_show(self.after)}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path, "before": self.before, "after": self.after}


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _json(value: Any) -> Any:
    """Dates and other objects as JSON-friendly values for the audit log."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _fields(before: dict[str, Any], after: dict[str, Any], prefix: str) -> list[Change]:
    out = []
    for key in list(before) + [k for k in after if k not in before]:
        old, new = before.get(key), after.get(key)
        if old != new:
            out.append(Change("change", f"{prefix}.{key}", _json(old), _json(new)))
    return out


def _campaign_summary(c: CampaignSpec) -> str:
    n = len(c.treatments)
    prio = f", priority {c.priority}" if c.priority is not None else ""
    return f"{c.channel}, {n} treatment{'s' if n != 1 else ''}{prio}, status {c.status}"


def _diff_campaign(old: CampaignSpec, new: CampaignSpec) -> list[Change]:
    prefix = f"campaign {new.id}"
    skip = {"id", "treatments"}
    changes = _fields(old.model_dump(exclude=skip), new.model_dump(exclude=skip), prefix)
    old_t = {t.id: t for t in old.treatments}
    new_t = {t.id: t for t in new.treatments}
    for tid, t in new_t.items():
        if tid not in old_t:
            changes.append(Change("add", f"{prefix} treatment {tid}", None, f"cost {t.cost}"))
        else:
            changes += _fields(
                old_t[tid].model_dump(exclude={"id"}),
                t.model_dump(exclude={"id"}),
                f"{prefix} treatment {tid}",
            )
    changes += [Change("remove", f"{prefix} treatment {tid}") for tid in old_t if tid not in new_t]
    if [t.id for t in old.treatments] != [t.id for t in new.treatments] and set(old_t) == set(
        new_t
    ):
        changes.append(
            Change(
                "change", f"{prefix}.treatment_order", list(old_t), [t.id for t in new.treatments]
            )
        )
    return changes


def diff_plans(old: Plan, new: Plan) -> list[Change]:
    """List what applying ``new`` over ``old`` changes, in plan order.

    >>> from orchestrator.plan import Plan
    >>> a = Plan()
    >>> b = Plan(settings={"global_control_fraction": 0.1})
    >>> [str(c) for c in diff_plans(a, b)]
    ['~ settings.global_control_fraction: 0.05 -> 0.1']
    """
    changes: list[Change] = []
    changes += _fields(
        old.settings.model_dump(exclude={"policy"}),
        new.settings.model_dump(exclude={"policy"}),
        "settings",
    )
    changes += _fields(old.settings.policy.model_dump(), new.settings.policy.model_dump(), "policy")

    for name in list(old.attributes) + [a for a in new.attributes if a not in old.attributes]:
        before, after = old.attributes.get(name), new.attributes.get(name)
        if before is None:
            changes.append(Change("add", f"attribute {name}", None, after))
        elif after is None:
            changes.append(Change("remove", f"attribute {name}", before, None))
        elif before != after:
            changes.append(Change("change", f"attribute {name}", before, after))

    old_caps = {c.key: c for c in old.caps}
    new_caps = {c.key: c for c in new.caps}
    for key, cap in new_caps.items():
        label = _cap_label(key)
        if key not in old_caps:
            changes.append(Change("add", label, None, f"max {cap.max}"))
        elif old_caps[key].max != cap.max:
            changes.append(Change("change", f"{label}.max", old_caps[key].max, cap.max))
    changes += [Change("remove", _cap_label(k)) for k in old_caps if k not in new_caps]

    old_c = {c.id: c for c in old.campaigns}
    new_c = {c.id: c for c in new.campaigns}
    for cid, camp in new_c.items():
        if cid not in old_c:
            changes.append(Change("add", f"campaign {cid}", None, _campaign_summary(camp)))
        else:
            changes += _diff_campaign(old_c[cid], camp)
    changes += [Change("remove", f"campaign {cid}") for cid in old_c if cid not in new_c]

    old_x = {(x.if_received, x.exclude): x.days for x in old.exclusions}
    new_x = {(x.if_received, x.exclude): x.days for x in new.exclusions}
    for pair, days in new_x.items():
        label = f"exclusion {pair[0]} -> {pair[1]}"
        if pair not in old_x:
            changes.append(Change("add", label, None, f"{days} days"))
        elif old_x[pair] != days:
            changes.append(Change("change", f"{label}.days", old_x[pair], days))
    changes += [Change("remove", f"exclusion {p[0]} -> {p[1]}") for p in old_x if p not in new_x]

    old_j = {j.id: j for j in old.journeys}
    new_j = {j.id: j for j in new.journeys}
    for jid, journey in new_j.items():
        if jid not in old_j:
            n = len(journey.steps)
            summary = f"{n} step{'s' if n != 1 else ''}, status {journey.status}"
            changes.append(Change("add", f"journey {jid}", None, summary))
        else:
            changes += _fields(
                old_j[jid].model_dump(mode="json", exclude={"id"}),
                journey.model_dump(mode="json", exclude={"id"}),
                f"journey {jid}",
            )
    changes += [Change("remove", f"journey {jid}") for jid in old_j if jid not in new_j]
    return changes


def _cap_label(key: tuple[str, str, int]) -> str:
    scope, channel, days = key
    return f"cap {channel or 'global'} per {days} days"
