"""`orch report personas --as-plan`: the persona split written back into the plan.

The optimization cycle: a campaign was measured, its honest uplift tree found where it works and
where it does not. The split becomes plan YAML that ``orch plan diff`` shows and ``orch plan
apply`` takes:

- the campaign keeps the groups where it works (or where there are too few customers to say):
  its target becomes ``(<its target>) and (<those groups>)``;
- a new campaign, ``<id>_rest``, *paused*, with a copy of its treatments, targets those groups:
  ``(<its target>) and (<the groups>)``. The team gives it a different offer and activates it,
  and it is measured in turn.

The file is the whole current plan with those two changes (``plan apply`` takes a whole plan), so
nothing else moves. A group's rule is the tree's path written in the rule language with exact
cuts; segments the tree saw at decision time (``lifecycle``, ``rfm``, ``micro``) become today's
fields (``lifecycle_stage``...), which a rule can read.
"""

from __future__ import annotations

import re
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session

from orchestrator.errors import InputError
from orchestrator.features import rule_schema
from orchestrator.measure.personas import HARMFUL, NOT_EFFECTIVE
from orchestrator.plan import SLUG, CampaignSpec, Plan, plan_to_yaml
from orchestrator.reports.personas import PersonaReport
from orchestrator.segments.history import SEGMENT_KINDS
from orchestrator.storage.plan_repo import attribute_types, read_plan

NOT_WORKING = (NOT_EFFECTIVE, HARMFUL)
ID_LIMIT = 64


def split_plan(engine: sa.Engine, report: PersonaReport, *, today: date) -> tuple[Plan, str, str]:
    """The current plan with the campaign split by its personas; also the new campaign's id and
    the rule of the groups moved to it. Raises InputError when there is nothing to split."""
    with Session(engine) as session:
        plan = read_plan(session)
    camp = plan.campaign(report.campaign)
    if camp is None:
        raise InputError(f"campaign {report.campaign!r} is no longer in the plan")
    bad = [leaf for leaf in report.tree.leaves if leaf.label in NOT_WORKING]
    good = [leaf for leaf in report.tree.leaves if leaf.label not in NOT_WORKING]
    if not bad:
        raise InputError(
            f"no group where {report.campaign!r} does not work (every group is effective or too "
            "small to say): nothing to split"
        )
    if len(bad) == len(report.tree.leaves):
        raise InputError(
            f"{report.campaign!r} works in none of its groups: pause or redesign it rather "
            "than split it"
        )
    with Session(engine) as session:  # imported attributes are rule fields too
        types = rule_schema({**attribute_types(session), **plan.attributes})
    fields = {}
    for name in report.features:
        field = SEGMENT_KINDS.get(name, name)
        if field in types:
            fields[name] = (field, types[field])
    try:
        groups = [report.tree.rule(leaf, fields) for leaf in bad]
        kept = [report.tree.rule(leaf, fields) for leaf in good]
    except KeyError as exc:
        raise InputError(
            f"the split uses {exc.args[0]!r}, which no target rule can read: re-run with "
            "--features naming rule fields"
        ) from None
    moved = " or ".join(f"({g})" for g in groups)
    rest_id = _free_id(plan, f"{camp.id}_rest")
    labels = ", ".join(sorted({leaf.label for leaf in bad}))
    note = (
        f"split on {today} by `orch report personas --campaign {camp.id}` "
        f"(decisions {report.since} to {report.until}): groups found {labels}"
    )
    rest = CampaignSpec.model_validate(
        {
            **camp.model_dump(),
            "id": rest_id,
            "name": f"{camp.name or camp.id}: where it did not work"[:200],
            "status": "paused",
            "priority": None,
            "target": f"({camp.target}) and ({moved})",
            "description": f"{note}; give it another offer, then activate it",
        }
    )
    # The kept groups by their own rules, not "not (moved)": a customer with an unknown value
    # makes a comparison unknown, and "not unknown" selects nobody.
    camp.target = f"({camp.target}) and ({' or '.join(f'({g})' for g in kept)})"
    camp.description = f"{camp.description + '; ' if camp.description else ''}{note}"
    plan.campaigns.insert(plan.campaigns.index(camp) + 1, rest)
    return plan, rest_id, moved


def split_plan_yaml(engine: sa.Engine, report: PersonaReport, *, today: date) -> str:
    plan, rest_id, _ = split_plan(engine, report, today=today)
    head = (
        f"# The plan with {report.campaign!r} split by its sub-personas: it keeps the groups "
        f"where it works,\n# {rest_id!r} (paused) takes the others. Review with "
        "`orch plan diff FILE`, then `orch plan apply FILE`.\n"
    )
    return head + plan_to_yaml(plan)


def _free_id(plan: Plan, wanted: str) -> str:
    base = re.sub(r"[^a-z0-9_-]", "_", wanted.lower())[:ID_LIMIT]
    taken = {c.id for c in plan.campaigns}
    candidate, n = base, 2
    while candidate in taken or not re.fullmatch(SLUG, candidate):
        candidate = f"{base[: ID_LIMIT - 3]}_{n}"
        n += 1
    return candidate
