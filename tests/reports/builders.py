"""A seeded retention programme written straight to the tables, with planted effects.

Customers get a ``welcome`` decision (treatments ``pct10`` or ``guide``), some a later
``winback`` one, a few a ``nocontrol`` one; the global control group gets nothing. What each
customer spends inside a window is a baseline plus, for test decisions, a planted effect, written
as events so that rewards come from :func:`orchestrator.rewards.mature_rewards` as in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from orchestrator import admin
from orchestrator.engine.hashing import customer_keys, in_global_control
from orchestrator.storage.models import (
    Customer,
    CustomerFeatures,
    Decision,
    Event,
    SegmentHistory,
    utcnow,
)

PLAN = Path(__file__).parent / "data" / "plan_reports.yaml"
START = date(2026, 3, 2)
COUNTRIES = ("ES", "FR", "DE")
COST = {("welcome", "pct10"): 1.0, ("welcome", "guide"): 0.0, ("winback", "win15"): 1.5}


def planted_effect(campaign: str, treatment: str, country: str, vip: bool) -> float:
    """Extra spend a sent decision causes inside its window (before the treatment's cost)."""
    if campaign == "welcome" and treatment == "pct10":
        return 40.0 if country == "ES" else 0.0
    if campaign == "welcome":
        return 5.0
    if campaign == "winback":
        return -10.0 if vip else 0.0
    return 2.0


def true_uplift(campaign: str, treatment: str, country: str, vip: bool) -> float:
    """Expected value uplift per decision: the planted effect minus the treatment's cost."""
    return planted_effect(campaign, treatment, country, vip) - COST.get((campaign, treatment), 0.0)


@dataclass
class Programme:
    customers: list[str]
    country: dict[str, str]
    vip: dict[str, bool]
    global_control: set[str]
    decisions: list[dict] = field(default_factory=list)
    last_window_end: date = START


def build_programme(
    engine: sa.Engine,
    n: int = 3000,
    *,
    seed: int = 0,
    days: int = 14,
    base_rate: float = 0.3,
    plan: Path = PLAN,
    apply_plan: bool = True,
) -> Programme:
    """Write customers, features, segment history, decisions and window events; no rewards."""
    rng = np.random.default_rng(seed)
    if apply_plan:
        admin.apply_plan_file(engine, plan, actor="test")
    ids = [f"K{i:05d}" for i in range(n)]
    country = rng.choice(COUNTRIES, size=n)
    vip = rng.random(n) < 0.25
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.05] = np.nan
    now = utcnow()
    gc = in_global_control(customer_keys(ids, "reports"), 0.1)
    prog = Programme(
        customers=ids,
        country=dict(zip(ids, country.tolist(), strict=True)),
        vip=dict(zip(ids, vip.tolist(), strict=True)),
        global_control={c for c, g in zip(ids, gc, strict=True) if g},
    )
    customers, features, history = [], [], []
    for i, cid in enumerate(ids):
        attrs = {"country": str(country[i]), "vip": bool(vip[i])}
        if np.isfinite(age[i]):
            attrs["age"] = float(age[i])
        customers.append(
            {"customer_id": cid, "attributes": attrs, "created_at": now, "updated_at": now}
        )
        features.append(
            {
                "customer_id": cid,
                "as_of": START,
                "updated_at": now,
                "lifecycle_stage": "active" if i % 3 else "at_risk",
                "monetary": float(rng.gamma(2.0, 50.0)),
                "frequency": int(rng.integers(0, 10)),
            }
        )
        # New until day 5 of the period, active after: a segment that changes over time.
        history += [
            {
                "customer_id": cid,
                "kind": "lifecycle",
                "value": "new",
                "valid_from": START - timedelta(days=30),
                "valid_to": START + timedelta(days=5),
            },
            {
                "customer_id": cid,
                "kind": "lifecycle",
                "value": "active",
                "valid_from": START + timedelta(days=5),
                "valid_to": None,
            },
        ]
    decisions, events = [], []
    for i, cid in enumerate(ids):
        if gc[i]:
            continue
        plan_days = [("welcome", str(rng.choice(["pct10", "guide"])), int(rng.integers(0, days)))]
        if rng.random() < 0.4:
            plan_days.append(("winback", "win15", plan_days[0][2] + 7 + int(rng.integers(0, 5))))
        if rng.random() < 0.05:
            plan_days.append(("nocontrol", "hello", plan_days[-1][2] + 15))
        for campaign, treatment, offset in plan_days:
            window = 14 if campaign == "winback" else 7
            control = campaign != "nocontrol" and rng.random() < 0.2
            run_date = START + timedelta(days=offset)
            decisions.append(
                {
                    "run_date": run_date,
                    "customer_id": cid,
                    "campaign_id": campaign,
                    "treatment_id": treatment,
                    "channel": "email",
                    "group": "control" if control else "test",
                    "propensity": 0.5 * (0.2 if control else 0.8),
                    "split_share": 0.2 if control else 0.8,
                    "reason": "policy",
                    "window_end": run_date + timedelta(days=window),
                }
            )
            prog.last_window_end = max(prog.last_window_end, run_date + timedelta(days=window))
            at = datetime.combine(run_date, datetime.min.time())
            if not control:
                effect = planted_effect(campaign, treatment, str(country[i]), bool(vip[i]))
                if effect:
                    amount = effect * float(rng.uniform(0.5, 1.5))
                    events.append(_event(at + timedelta(hours=30), cid, amount))
    # Everybody's own spending, with or without campaigns: a purchase in a week with
    # probability ``base_rate``, over the period and the windows after it.
    weeks = (days + 35) // 7
    for cid in ids:
        for week in range(weeks):
            if rng.random() < base_rate:
                day = START + timedelta(days=7 * week + int(rng.integers(0, 7)))
                at = datetime.combine(day, datetime.min.time()) + timedelta(hours=10)
                events.append(_event(at, cid, float(rng.gamma(2.0, 20.0))))
    for k, e in enumerate(events):
        e["source_event_id"] = f"e{k}"
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer), customers)
        conn.execute(sa.insert(CustomerFeatures), features)
        conn.execute(sa.insert(SegmentHistory), history)
        conn.execute(sa.insert(Decision), decisions)
        if events:
            conn.execute(sa.insert(Event), events)
    prog.decisions = decisions
    return prog


def _event(at: datetime, customer: str, amount: float) -> dict:
    return {
        "customer_id": customer,
        "occurred_at": at,
        "type": "purchase" if amount >= 0 else "return",
        "amount": round(amount, 2),
        "imported_at": at,
    }
