"""Reward maturation on a real database: hand-checked values, once per decision."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import InputError
from orchestrator.rewards import mature_rewards
from orchestrator.run import run_daily
from orchestrator.storage.models import Customer, Decision, Event, Reward, Treatment
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


# --- against a direct reading of the rules, for random logs -----------------------------------

CUSTOMERS = [f"C{i:03d}" for i in range(12)]
decision_st = st.tuples(
    st.sampled_from(CUSTOMERS),
    st.integers(0, 20),  # run day
    st.integers(1, 14),  # window length
    st.sampled_from(["test", "control"]),
    st.booleans(),  # a send (else "send nothing")
)
event_st = st.tuples(
    st.sampled_from(CUSTOMERS + ["X-unknown"]),
    st.integers(-3, 40),  # day
    st.integers(0, 23),  # hour
    st.sampled_from(["purchase", "return", "visit"]),
    st.floats(-500, 500, allow_nan=False).map(lambda x: round(x, 2)),
)


def _reference(decisions: list[Decision], events: list[Event], costs: dict) -> dict:
    """Each decision's reward, read straight from the module's rules, one decision at a time."""
    out = {}
    for d in decisions:
        end = d.window_end
        if d.campaign_id is None:  # sending nothing: cut at the customer's next contact
            later = [
                o.run_date
                for o in decisions
                if o.customer_id == d.customer_id
                and o.group == "test"
                and o.campaign_id is not None
                and o.run_date > d.run_date
            ]
            end = min([end, *later])
        inside = [
            e
            for e in events
            if e.customer_id == d.customer_id and d.run_date <= e.occurred_at.date() < end
        ]
        sent = d.group == "test" and d.campaign_id is not None
        cost = costs[(d.campaign_id, d.treatment_id)] if sent else 0.0
        revenue = sum(e.amount for e in inside)
        converted = any(e.type == "purchase" for e in inside)
        out[d.id] = (revenue, cost, converted, (end - d.run_date).days)
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    drawn=st.lists(decision_st, max_size=40, unique_by=lambda t: (t[0], t[1])),
    drawn_events=st.lists(event_st, max_size=60),
    chunk=st.sampled_from([1, 3, 1_000_000]),
    as_of=st.integers(5, 40),
)
def test_maturation_equals_the_rules_for_random_logs(
    engine: sa.Engine, drawn, drawn_events, chunk, as_of
) -> None:
    """Random decisions and events, matured in ranges of customers of every size (``chunk``
    decisions): each reward is what the rules give, and each decision matures once."""
    with engine.begin() as conn:
        for table in ("reward", "decision", "event", "customer"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    with engine.connect() as conn:
        planned = conn.execute(sa.text("SELECT COUNT(*) FROM campaign")).scalar_one()
    if not planned:
        admin.apply_plan_file(engine, PLAN, actor="t")
    with Session(engine, expire_on_commit=False) as s:
        treatments = sorted(s.exec(select(Treatment)), key=lambda t: (t.campaign_id, t.id))
        costs = {(t.campaign_id, t.id): t.cost for t in treatments}
        s.add_all(Customer(customer_id=c, attributes={}) for c in CUSTOMERS)
        decisions = [
            Decision(
                run_date=DAY + timedelta(days=day),
                customer_id=cust,
                campaign_id=treatments[i % len(treatments)].campaign_id if send else None,
                treatment_id=treatments[i % len(treatments)].id if send else None,
                group=group,
                propensity=0.5,
                reason="policy",
                window_end=DAY + timedelta(days=day + length),
            )
            for i, (cust, day, length, group, send) in enumerate(drawn)
        ]
        events = [
            Event(
                source_event_id=f"e{i}",
                customer_id=cust,
                occurred_at=datetime.combine(DAY + timedelta(days=day), datetime.min.time())
                + timedelta(hours=hour),
                type=kind,
                amount=amount,
            )
            for i, (cust, day, hour, kind, amount) in enumerate(drawn_events)
        ]
        s.add_all(decisions + events)
        s.commit()
    cutoff = DAY + timedelta(days=as_of)
    first = mature_rewards(engine, as_of=cutoff, chunk=chunk)
    again = mature_rewards(engine, as_of=cutoff, chunk=chunk)
    due = [d for d in decisions if d.window_end <= cutoff]
    assert first.matured == len(due) and again.matured == 0
    expected = _reference(decisions, events, costs)
    with Session(engine) as s:
        stored = {r.decision_id: r for r in s.exec(select(Reward))}
    assert set(stored) == {d.id for d in due}
    for d in due:
        revenue, cost, converted, days = expected[d.id]
        r = stored[d.id]
        assert r.revenue == pytest.approx(revenue, abs=1e-9), d
        assert (r.cost, r.converted, r.window_days) == (cost, converted, days), d
        assert r.value == pytest.approx(revenue - cost, abs=1e-9)
    assert first.converted == sum(expected[d.id][2] for d in due)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_on_sqlite_are_refused_and_nothing_is_written(engine: sa.Engine, snapshot) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 50)
    run_daily(engine, day=DAY, batch_size=100)
    before = snapshot(engine)
    with pytest.raises(InputError, match="need PostgreSQL"):
        mature_rewards(engine, as_of=DAY + timedelta(days=30), workers=2)
    assert snapshot(engine) == before
