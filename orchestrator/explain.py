"""`orch explain`: why a customer did or did not get each campaign on a date.

It runs the same core as the daily run (``decide_partition``) on one customer, and asks each
stage of the registry (``engine.stages.STAGES``) to put its block in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator.engine.history import open_windows
from orchestrator.engine.partition import RunSpec, decide_partition, materialize
from orchestrator.engine.stages import STAGES
from orchestrator.errors import NotFound
from orchestrator.rules.columns import display_value
from orchestrator.run import load_batch_history, prepare
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.journey_repo import load_journey_input
from orchestrator.storage.models import Decision, Run
from orchestrator.storage.run_repo import load_customers


@dataclass
class CampaignLine:
    campaign_id: str
    channel: str
    priority: int | None
    possible: bool
    why_not: list[str]
    actions: list[dict[str, Any]] = field(default_factory=list)  # treatment, score, probability


@dataclass
class Explanation:
    customer_id: str
    day: date
    in_global_control: bool
    window_open_until: date | None
    campaigns: list[CampaignLine]
    not_live: list[str]
    logged: dict[str, Any] | None
    would_choose: str | None
    no_send_probability: float | None
    journeys: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "date": self.day.isoformat(),
            "in_global_control": self.in_global_control,
            "window_open_until": self.window_open_until.isoformat()
            if self.window_open_until
            else None,
            "campaigns": [c.__dict__ for c in self.campaigns],
            "not_live": self.not_live,
            "logged_decision": self.logged,
            "would_choose": self.would_choose,
            "no_send_probability": self.no_send_probability,
            "journeys": self.journeys,
        }


def _values(rule: Any, columns: Any) -> str:
    """`` (with field = value, ...)``: the customer's values of the fields the rule reads."""
    shown = [
        f"{name} = {display_value(columns[name], 0)}"
        for name in sorted(getattr(rule, "fields", ()))
        if name in columns
    ]
    return f" (with {', '.join(shown)})" if shown else ""


def explain_customer(engine: sa.Engine, customer_id: str, day: date) -> Explanation:
    """Decide for one customer with the run's own core and spec, and say what each stage did.

    A run of ``day`` that exists lends its spec (plan, policy state, seed), so the choice shown
    is the one the run made; otherwise today's plan and policy decide, with the default seed."""
    require_schema(engine)
    with session_scope(engine) as session:
        run = session.exec(select(Run).where(col(Run.run_date) == day)).first()
        if run is not None and run.spec:
            prepared = materialize(RunSpec.from_json(bytes(run.spec)))
        else:
            prepared = prepare(session, day)
        logged_row = session.exec(
            select(Decision).where(
                col(Decision.run_date) == day, col(Decision.customer_id) == customer_id
            )
        ).first()
    with engine.connect() as conn:
        raw = load_customers(conn, after=None, limit=1, customer_id=customer_id)
        if not raw.ids:
            raise NotFound(f"no customer with id {customer_id!r}")
        history = load_batch_history(conn, prepared, raw.ids)
    with engine.connect() as conn:
        journeys = load_journey_input(
            conn, raw.ids, prepared.setup.journeys, day, before_run=run is not None
        )
        before = [st.copy() for st in journeys.states] if journeys else []
    dec = decide_partition(prepared, raw, history, journeys=journeys, explain=True).decisions
    acts, setup = prepared.setup.actions, prepared.setup
    masks, rule_ok = dec.stage_masks, dec.rule_ok
    batch = dec.batch
    assert rule_ok is not None and dec.scores is not None and dec.action_dist is not None
    assert batch is not None
    _, window_left = open_windows(history, 1)

    lines = []
    for ci, camp in enumerate(acts.campaigns):
        why: list[str] = []
        if not rule_ok[0, ci]:
            why.append(f"rule false: {camp.target}{_values(setup.rules[ci], batch.columns)}")
        for stage in STAGES:
            if masks[stage.name][0, ci]:
                why += stage.why(setup, batch, 0, ci)
        line = CampaignLine(camp.id, camp.channel, camp.priority, not why, why)
        for a in np.flatnonzero(acts.campaign_of == ci).tolist():
            prob = float(dec.action_dist[0, a])
            score = float(dec.scores[0, a])
            line.actions.append(
                {
                    "treatment": acts.treatment_ids[a],
                    "score": None if np.isnan(score) else score,
                    "probability": prob,
                }
            )
        lines.append(line)
    no_send_p = None
    if acts.no_send is not None and dec.reason[0] == 2:
        no_send_p = float(dec.action_dist[0, acts.no_send])
    logged = None
    if logged_row is not None:
        logged = {
            "campaign": logged_row.campaign_id,
            "treatment": logged_row.treatment_id,
            "group": logged_row.group,
            "reason": logged_row.reason,
            "propensity": logged_row.propensity,
            "window_end": logged_row.window_end.isoformat() if logged_row.window_end else None,
        }
    live = set(acts.campaign_ids)
    return Explanation(
        customer_id=customer_id,
        day=day,
        in_global_control=bool(dec.in_global_control[0]),
        window_open_until=day + timedelta(days=int(window_left[0])) if window_left[0] > 0 else None,
        campaigns=lines,
        not_live=[
            f"{c.id} ({_not_live_reason(c, day)})"
            for c in prepared.plan.campaigns
            if c.id not in live
        ],
        logged=logged,
        would_choose=acts.label(int(dec.action[0])) if dec.action[0] >= 0 else None,
        journeys=_journey_lines(prepared, before, dec, day),
        no_send_probability=no_send_p,
    )


def _journey_lines(prepared: Any, before: list[Any], dec: Any, day: date) -> list[dict[str, Any]]:
    """Where the customer stood in each journey before the date, and what the date does."""
    from orchestrator.engine.journeys import CONTROL, STATUS, TEST

    out = []
    after = dec.journey_states or []
    for j, jp in enumerate(prepared.setup.journeys):
        if j >= len(before):
            break
        old, new = before[j], after[j]
        entered = int(new.entered[0])
        sent = dec.journey is not None and int(dec.journey[0]) == j
        if sent:
            today = f"step {int(dec.journey_step[0]) + 1} goes out"
        elif dec.journey_blocked is not None and dec.journey_blocked[j][0]:
            today = "a step is due but blocked (caps, windows, global control or a priority)"
        elif new.status[0] != old.status[0]:
            today = f"{STATUS[int(old.status[0])]} -> {STATUS[int(new.status[0])]}"
        else:
            today = "nothing due"
        out.append(
            {
                "journey": jp.id,
                "status": STATUS[int(new.status[0])],
                "entered_on": date.fromordinal(entered).isoformat() if entered > 0 else None,
                "next_step": int(new.step[0]) + 1,
                "group": {TEST: "test", CONTROL: "control"}.get(int(new.group[0])),
                "today": today,
            }
        )
    return out


def _not_live_reason(camp: Any, day: date) -> str:
    if camp.status != "active":
        return camp.status
    if camp.start and day < camp.start:
        return f"starts {camp.start}"
    return f"ended {camp.end}"
