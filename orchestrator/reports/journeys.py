"""`orch journeys list` and `orch journeys show`: each journey's steps, where its customers
stand, and what each step decided (test and control)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import NotFound
from orchestrator.plan import JourneySpec
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.plan_repo import read_plan


@dataclass
class JourneyView:
    spec: JourneySpec
    customers: dict[str, int] = field(default_factory=dict)  # status -> customers
    at_step: dict[int, int] = field(default_factory=dict)  # active customers by next step (1..)
    groups: dict[str, int] = field(default_factory=dict)  # test / control, ever entered
    decisions: dict[int, dict[str, int]] = field(default_factory=dict)  # step -> group -> n

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.spec.model_dump(mode="json"),
            "customers": self.customers,
            "active_at_step": {str(k): v for k, v in sorted(self.at_step.items())},
            "groups": self.groups,
            "decisions_by_step": {str(k): v for k, v in sorted(self.decisions.items())},
        }


def journey_views(engine: sa.Engine, journey_id: str | None = None) -> list[JourneyView]:
    """Every journey of the plan (or one), with its customers and decisions so far."""
    require_schema(engine)
    with session_scope(engine) as session:
        plan = read_plan(session)
        conn = session.connection()
        journeys = plan.journeys
        if journey_id is not None:
            journeys = [j for j in journeys if j.id == journey_id]
            if not journeys:
                known = ", ".join(j.id for j in plan.journeys) or "none"
                raise NotFound(f"no journey with id {journey_id!r} (journeys: {known})")
        views = {j.id: JourneyView(j) for j in journeys}
        for jid, status, n in conn.execute(
            sa.text(
                "SELECT journey_id, status, COUNT(*) FROM journey_state GROUP BY journey_id, status"
            )
        ):
            if jid in views:
                views[jid].customers[status] = int(n)
        for jid, step, n in conn.execute(
            sa.text(
                "SELECT journey_id, step, COUNT(*) FROM journey_state WHERE status = 'active' "
                "GROUP BY journey_id, step"
            )
        ):
            if jid in views:
                views[jid].at_step[int(step) + 1] = int(n)
        for jid, grp, n in conn.execute(
            sa.text("SELECT journey_id, grp, COUNT(*) FROM journey_state GROUP BY journey_id, grp")
        ):
            if jid in views:
                views[jid].groups[grp] = int(n)
        for jid, step, grp, n in conn.execute(
            sa.text(
                'SELECT journey_id, journey_step, "group", COUNT(*) FROM decision '
                'WHERE journey_id IS NOT NULL GROUP BY journey_id, journey_step, "group"'
            )
        ):
            if jid in views:
                views[jid].decisions.setdefault(int(step), {})[grp] = int(n)
    return list(views.values())
