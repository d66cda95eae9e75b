"""Reward maturation on a real database: hand-checked values, once per decision."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.rewards import mature_rewards
from orchestrator.run import run_daily
from orchestrator.storage.models import Decision, Event, Reward, Treatment
from tests.helpers import seed_customers

PLAN = Path(__file__).parent / "data" / "plan_run.yaml"
DAY = date(2026, 11, 23)


def test_rewards_are_window_revenue_minus_cost_once(engine: sa.Engine) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 300)
    run_daily(engine, day=DAY, batch_size=100)
    with Session(engine, expire_on_commit=False) as s:
        decisions = list(s.exec(select(Decision)))
        events = []
        for i, d in enumerate(decisions):
            # one purchase inside the window, one on its last day + 1 (outside), one before
            inside = datetime.combine(DAY, datetime.min.time()) + timedelta(days=1, hours=3)
            events += [
                Event(
                    source_event_id=f"in{i}",
                    customer_id=d.customer_id,
                    occurred_at=inside,
                    type="purchase",
                    amount=10.0 + i,
                ),
                Event(
                    source_event_id=f"out{i}",
                    customer_id=d.customer_id,
                    occurred_at=datetime.combine(d.window_end, datetime.min.time()),
                    type="purchase",
                    amount=1000.0,
                ),
                Event(
                    source_event_id=f"pre{i}",
                    customer_id=d.customer_id,
                    occurred_at=inside - timedelta(days=2),
                    type="purchase",
                    amount=500.0,
                ),
            ]
        s.add_all(events)
        s.commit()
        costs = {(t.campaign_id, t.id): t.cost for t in s.exec(select(Treatment))}
    early = mature_rewards(engine, as_of=DAY + timedelta(days=6))
    assert early.matured == sum(1 for d in decisions if d.window_end <= DAY + timedelta(days=6))
    report = mature_rewards(engine, as_of=DAY + timedelta(days=30))
    assert early.matured + report.matured == len(decisions) > 0
    assert mature_rewards(engine, as_of=DAY + timedelta(days=60)).matured == 0
    with Session(engine) as s:
        rewards = {r.decision_id: r for r in s.exec(select(Reward))}
    for i, d in enumerate(decisions):
        r = rewards[d.id]
        sent = d.group == "test" and d.campaign_id is not None
        cost = costs[(d.campaign_id, d.treatment_id)] if sent else 0.0
        assert r.revenue == 10.0 + i
        assert r.cost == cost and r.value == 10.0 + i - cost and r.converted


def test_a_send_nothing_window_ends_at_the_next_contact(engine: sa.Engine) -> None:
    """Sending nothing blocks nothing: when the customer is contacted two days later, the
    no-send outcome is measured over those two days only (not the next campaign's effect)."""
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 300)
    run_daily(engine, day=DAY, batch_size=100)
    run_daily(engine, day=DAY + timedelta(days=2), batch_size=100)
    with Session(engine, expire_on_commit=False) as s:
        first = [d for d in s.exec(select(Decision)) if d.run_date == DAY]
        later = {
            d.customer_id
            for d in s.exec(select(Decision))
            if d.run_date == DAY + timedelta(days=2) and d.group == "test" and d.campaign_id
        }
        no_send = [d for d in first if d.campaign_id is None]
        cut = [d for d in no_send if d.customer_id in later]
        kept = [d for d in no_send if d.customer_id not in later]
        assert cut and kept, "the plan should give both kinds of no-send decisions"
        for i, d in enumerate(no_send):
            for offset, amount in ((1, 10.0), (3, 1000.0)):  # before and after the contact
                s.add(
                    Event(
                        source_event_id=f"ns{i}-{offset}",
                        customer_id=d.customer_id,
                        occurred_at=datetime.combine(
                            DAY + timedelta(days=offset), datetime.min.time()
                        ),
                        type="purchase",
                        amount=amount,
                    )
                )
        s.commit()
    mature_rewards(engine, as_of=DAY + timedelta(days=30))
    with Session(engine) as s:
        rewards = {r.decision_id: r for r in s.exec(select(Reward))}
    for d in cut:
        assert rewards[d.id].window_days == 2 and rewards[d.id].revenue == 10.0
    for d in kept:
        r = rewards[d.id]
        assert r.window_days == (d.window_end - d.run_date).days and r.revenue == 1010.0
    # A control decision's window is not cut: other campaigns cannot reach the customer in it.
    for d in first:
        if d.group == "control":
            assert rewards[d.id].window_days == (d.window_end - d.run_date).days
