"""Journeys in the daily run against a real database (SQLite always, PostgreSQL when set):
steps in order at their offsets, never twice, never after the exit; control customers get none
of the steps; caps delay a step that defers; cap-exempt steps go through a full cap."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import InputError, PlanError
from orchestrator.run import run_daily
from orchestrator.storage.models import Decision, Event, JourneyStateRow
from tests.helpers import seed_customers
from tests.test_run import PLAN

DAY = date(2026, 11, 23)
JOURNEYS = """
  - id: welcome
    channel: email
    target: "false"
    measurement_days: 2
    control_fraction: 0.0
    treatments: [{id: hello}, {id: guide}, {id: tips}]
  - id: cart
    channel: push
    target: "false"
    measurement_days: 1
    control_fraction: 0.0
    treatments: [{id: reminder}, {id: free_ship}]
journeys:
  - id: welcome_series
    entry: {event: signup}
    exit: {event: purchase}
    control_fraction: 0.2
    defer_days: 3
    steps:
      - {day: 0, campaign: welcome, treatment: hello}
      - {day: 3, campaign: welcome, treatment: guide}
      - {day: 7, campaign: welcome}
  - id: abandoned_cart
    entry: {event: cart_abandoned}
    exit: {event: purchase}
    reentry: {after_days: 5}
    cap_exempt: true
    control_fraction: 0.0
    steps:
      - {day: 0, campaign: cart, treatment: reminder}
      - {day: 1, campaign: cart, treatment: free_ship, when_blocked: skip}
"""


def plan_text() -> str:
    text = PLAN.read_text()
    head, _, tail = text.partition("exclusions:")
    return (
        head.rstrip()
        + "\n"
        + JOURNEYS.split("journeys:")[0].rstrip()
        + "\nexclusions:"
        + (tail.rstrip() + "\njourneys:" + JOURNEYS.split("journeys:")[1])
    )


@pytest.fixture
def ready(engine: sa.Engine, tmp_path: Path) -> sa.Engine:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text())
    admin.apply_plan_file(engine, path, actor="test")
    seed_customers(engine, 400)
    return engine


def add_events(engine: sa.Engine, rows: list[tuple[str, str, date]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Event.__table__),  # type: ignore[attr-defined]
            [
                {
                    "source_event_id": f"{kind}:{cid}:{day}",
                    "customer_id": cid,
                    "occurred_at": datetime.combine(day, datetime.min.time()) + timedelta(hours=9),
                    "type": kind,
                    "amount": 10.0 if kind == "purchase" else 0.0,
                    "discount": 0.0,
                    "imported_at": datetime(2026, 11, 1),
                }
                for cid, kind, day in rows
            ],
        )


def journey_log(engine: sa.Engine) -> list[Decision]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(Decision)
                .where(Decision.reason == "journey")
                .order_by(Decision.customer_id, Decision.run_date)
            )
        )


def test_the_plan_refuses_a_bad_journey(engine: sa.Engine, tmp_path: Path) -> None:
    for bad, message in [
        ("{day: 3, campaign: welcome, treatment: guide}\n      - {day: 3,", "must increase"),
        ("{day: 0, campaign: welcome, treatment: hello}", None),
    ]:
        del bad, message
    text = plan_text().replace(
        "{day: 3, campaign: welcome, treatment: guide}", "{day: 0, campaign: welcome}"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match="step days must increase"):
        admin.apply_plan_file(engine, path, actor="test")
    path.write_text(plan_text().replace("campaign: cart, treatment: reminder", "campaign: crat"))
    with pytest.raises(PlanError, match="no campaign with id 'crat'.*did you mean 'cart'"):
        admin.apply_plan_file(engine, path, actor="test")
    path.write_text(plan_text().replace("treatment: free_ship", "treatment: gratis"))
    with pytest.raises(PlanError, match="has no treatment 'gratis'"):
        admin.apply_plan_file(engine, path, actor="test")


def test_steps_in_order_at_their_offsets_never_after_exit(ready: sa.Engine) -> None:
    ids = [f"C{i:06d}" for i in range(400)]
    signups = ids[:120]
    carts = ids[100:160]
    buyers = set(ids[:30])  # they buy two days after signing up: no step after that
    add_events(ready, [(c, "signup", DAY - timedelta(days=1)) for c in signups])
    add_events(ready, [(c, "cart_abandoned", DAY - timedelta(days=1)) for c in carts])
    add_events(ready, [(c, "purchase", DAY + timedelta(days=2)) for c in buyers])
    for offset in range(12):
        run_daily(ready, day=DAY + timedelta(days=offset), batch_size=90)
    log = journey_log(ready)
    assert log, "no journey step was decided"
    by: dict[tuple[str, str], list[Decision]] = {}
    for d in log:
        by.setdefault((d.customer_id, d.journey_id or ""), []).append(d)
    offsets = {"welcome_series": [0, 3, 7], "abandoned_cart": [0, 1]}
    defer = {"welcome_series": 3, "abandoned_cart": 2}  # the plan's defer_days (default 2)
    for (cid, jid), rows in by.items():
        steps = [r.journey_step for r in rows]
        assert steps == sorted(set(steps)), (cid, jid, steps)  # in order, never twice
        assert len({r.group for r in rows}) == 1  # the journey's split holds for every step
        for r in rows:
            k = (r.journey_step or 0) - 1
            late = (r.run_date - DAY).days - offsets[jid][k]
            assert 0 <= late <= defer[jid], (cid, jid, r.journey_step, r.run_date)
            if jid == "welcome_series" and cid in buyers:
                assert r.run_date <= DAY + timedelta(days=2)  # the exit ends the journey
    welcome = {c for c, j in by if j == "welcome_series"}
    assert welcome <= set(signups)
    controls = {
        c for (c, j), rows in by.items() if j == "welcome_series" and rows[0].group == "control"
    }
    assert 0 < len(controls) < len(welcome) / 2
    # Step 2 (day 3) waits for the email cap (1 per 5 days) and goes out on day 5 (the
    # journey's controls got no step 1 e-mail, so nothing holds theirs).
    second = [
        r
        for r in log
        if r.journey_id == "welcome_series" and r.journey_step == 2 and r.group == "test"
    ]
    assert second and {(r.run_date - DAY).days for r in second} <= {5, 6}
    with Session(ready) as s:
        states = list(s.exec(select(JourneyStateRow)))
    exited = {st.customer_id for st in states if st.status == "exited"}
    assert exited and exited <= buyers

    # Measured like campaigns: one uplift row per step of the journey, test against control.
    from orchestrator.reports.uplift import uplift_report

    report = uplift_report(
        ready, as_of=DAY + timedelta(days=30), journey="welcome_series", by=["step"]
    )
    steps = {r.segment["step"]: r for r in report.rows}
    assert set(steps) == {"step 1", "step 2", "step 3"}
    for row in steps.values():
        assert row.campaign == "welcome" and row.decisions_test > 0 and row.decisions_control > 0
    logged = sum(1 for d in log if d.journey_id == "welcome_series")
    assert sum(r.decisions_test + r.decisions_control for r in report.rows) == logged
    with pytest.raises(InputError, match="no journey with id 'welcom'"):
        uplift_report(ready, as_of=DAY + timedelta(days=30), journey="welcom")


def test_cap_exempt_steps_go_through_a_full_cap(ready: sa.Engine) -> None:
    ids = [f"C{i:06d}" for i in range(400)]
    add_events(ready, [(c, "cart_abandoned", DAY) for c in ids[:200]])
    run_daily(ready, day=DAY, batch_size=100)  # campaigns fill caps; the journey starts tomorrow
    run_daily(ready, day=DAY + timedelta(days=1), batch_size=100)
    run_daily(ready, day=DAY + timedelta(days=2), batch_size=100)
    log = [d for d in journey_log(ready) if d.journey_id == "abandoned_cart"]
    reached = {d.customer_id for d in log if d.journey_step == 2}
    assert reached, "the second cart step never went out"


def test_a_forced_rerun_of_the_latest_date_rewinds_the_journeys(ready: sa.Engine) -> None:
    ids = [f"C{i:06d}" for i in range(400)]
    add_events(ready, [(c, "signup", DAY - timedelta(days=1)) for c in ids[:50]])
    run_daily(ready, day=DAY, batch_size=100)
    first = [(d.customer_id, d.journey_step, d.group) for d in journey_log(ready)]
    run_daily(ready, day=DAY, batch_size=100, force=True)
    assert [(d.customer_id, d.journey_step, d.group) for d in journey_log(ready)] == first
    add_events(ready, [(c, "signup", DAY) for c in ids[50:80]])  # they enter the next day
    run_daily(ready, day=DAY + timedelta(days=1), batch_size=100)
    with pytest.raises(InputError, match="cannot be rewound past the latest run"):
        run_daily(ready, day=DAY, batch_size=100, force=True)


def test_journeys_list_and_show_on_the_command_line(ready: sa.Engine, db_url: str) -> None:
    from tests.test_cli import orch

    ids = [f"C{i:06d}" for i in range(400)]
    add_events(ready, [(c, "signup", DAY - timedelta(days=1)) for c in ids[:40]])
    run_daily(ready, day=DAY, batch_size=100)
    listed = orch(db_url, "journeys", "list")
    assert listed.returncode == 0, listed.stderr
    assert "welcome_series" in listed.stdout and "abandoned_cart" in listed.stdout
    shown = orch(db_url, "journeys", "show", "welcome_series", "--json")
    assert shown.returncode == 0, shown.stderr
    data = __import__("json").loads(shown.stdout)
    first = data["decisions_by_step"]["1"]
    assert first.get("test", 0) + first.get("control", 0) > 0
    assert sum(data["customers"].values()) == sum(data["groups"].values())
    missing = orch(db_url, "journeys", "show", "welcom")
    assert missing.returncode == 2 and "no journey with id 'welcom'" in missing.stderr


def test_explain_shows_the_journey_step_the_run_sent(ready: sa.Engine) -> None:
    from orchestrator.explain import explain_customer

    ids = [f"C{i:06d}" for i in range(400)]
    add_events(ready, [(c, "signup", DAY - timedelta(days=1)) for c in ids[:40]])
    run_daily(ready, day=DAY, batch_size=100)
    for d in journey_log(ready)[:10]:
        x = explain_customer(ready, d.customer_id, DAY)
        assert x.would_choose == f"{d.campaign_id}/{d.treatment_id}"
        (line,) = [j for j in x.journeys if j["journey"] == d.journey_id]
        assert line["today"] == "step 1 goes out" and line["group"] == d.group


def test_validate_warns_of_an_entry_event_never_seen(
    ready: sa.Engine, db_url: str, tmp_path
) -> None:
    from tests.test_cli import orch

    add_events(ready, [("C000001", "cart_abandoned", DAY)])
    path = tmp_path / "typo.yaml"
    path.write_text(plan_text().replace("{event: cart_abandoned}", "{event: cart_abandonned}"))
    out = orch(db_url, "plan", "validate", str(path))
    assert out.returncode == 0, out.stderr  # a warning, not an error
    assert "no event of type 'cart_abandonned'" in out.stderr
    assert "did you mean 'cart_abandoned'?" in out.stderr
