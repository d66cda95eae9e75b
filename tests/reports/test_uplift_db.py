"""The reports on a real database (SQLite, and PostgreSQL when configured), checked against
independent computations: rewards read through the ORM, grouped in Python, tested with scipy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from scipy import stats
from sqlmodel import Session, select

from orchestrator.engine.hashing import customer_keys, in_global_control
from orchestrator.errors import CampaignNotFound, InputError, NotFound
from orchestrator.reports.personas import persona_report
from orchestrator.reports.programme import programme_uplift
from orchestrator.reports.uplift import UpliftRow, uplift_report
from orchestrator.storage.models import Decision, Event, Reward
from tests.reports.builders import START, build_programme
from tests.reports.conftest import AS_OF, Built

Ref = dict[str, dict[str, list]]


def _reference(engine: sa.Engine, key: Callable[[Decision], tuple]) -> dict[tuple, Ref]:
    """Per row key and group: each customer's summed value and whether they converted."""
    per: dict[tuple, dict[str, dict[str, list]]] = defaultdict(
        lambda: {
            "test": defaultdict(lambda: [0.0, False]),
            "control": defaultdict(lambda: [0.0, False]),
        }
    )
    with Session(engine) as s:
        pairs = s.exec(select(Decision, Reward).where(Decision.id == Reward.decision_id)).all()
    for d, r in pairs:
        if d.campaign_id is None:
            continue
        cell = per[key(d)][d.group][d.customer_id]
        cell[0] += r.value
        cell[1] = cell[1] or r.converted
    return per


def _check_row(row: UpliftRow, ref: Ref) -> None:
    t = np.array([v[0] for v in ref["test"].values()])
    c = np.array([v[0] for v in ref["control"].values()])
    assert (row.n_test, row.n_control) == (len(t), len(c))
    assert row.value_test == pytest.approx(t.mean())
    if len(c) == 0:
        assert row.status == "no_control" and np.isnan(row.uplift_low)
        return
    assert row.value_control == pytest.approx(c.mean())
    assert row.uplift == pytest.approx(t.mean() - c.mean())
    assert row.incremental == pytest.approx((t.mean() - c.mean()) * len(t))
    conv_t = sum(v[1] for v in ref["test"].values())
    conv_c = sum(v[1] for v in ref["control"].values())
    assert row.conversion_test == pytest.approx(conv_t / len(t))
    assert row.conversion_control == pytest.approx(conv_c / len(c))
    if row.status != "ok":
        assert np.isnan(row.uplift_low) and np.isnan(row.p_value)
        return
    ref_t = stats.ttest_ind(t, c, equal_var=False)
    ci = ref_t.confidence_interval()
    assert row.p_value == pytest.approx(ref_t.pvalue, rel=1e-6)
    assert (row.uplift_low, row.uplift_high) == pytest.approx((ci.low, ci.high), rel=1e-6)
    chi = stats.chi2_contingency(
        [[conv_t, len(t) - conv_t], [conv_c, len(c) - conv_c]], correction=False
    )
    assert row.conversion_p == pytest.approx(chi.pvalue, rel=1e-6, abs=1e-300)


def test_campaign_rows_match_an_independent_computation(built: Built) -> None:
    report = uplift_report(built.engine, as_of=AS_OF)
    ref = _reference(built.engine, lambda d: (d.campaign_id,))
    assert [r.campaign for r in report.rows] == ["welcome", "winback", "nocontrol"]  # plan order
    for row in report.rows:
        _check_row(row, ref[(row.campaign,)])
    assert report.still_open == 0 and report.decisions == len(built.programme.decisions)
    ok = [r for r in report.rows if r.status == "ok"]
    q = stats.false_discovery_control([r.p_value for r in ok], method="bh")
    assert [r.q_value for r in ok] == pytest.approx(list(q))
    welcome = report.rows[0]
    assert welcome.verdict == "gain" and welcome.uplift_low > 0


def test_rewards_are_matured_by_the_report_once(built: Built) -> None:
    uplift_report(built.engine, as_of=AS_OF)
    with Session(built.engine) as s:
        n = len(s.exec(select(Reward)).all())
        ids = {d.id for d in s.exec(select(Decision))}
    assert n == len(ids)
    again = uplift_report(built.engine, as_of=AS_OF)
    assert again.matured_now == 0


def test_treatments_are_compared_with_their_own_control(built: Built) -> None:
    report = uplift_report(built.engine, as_of=AS_OF, by=["treatment"])
    ref = _reference(built.engine, lambda d: (d.campaign_id, d.treatment_id))
    labels = [(r.campaign, r.segment["treatment"]) for r in report.rows]
    assert labels == [
        ("welcome", "guide"),
        ("welcome", "pct10"),
        ("winback", "win15"),
        ("nocontrol", "hello"),
    ] or sorted(labels) == sorted(ref)
    for row in report.rows:
        _check_row(row, ref[(row.campaign, row.segment["treatment"])])
    only = uplift_report(built.engine, as_of=AS_OF, campaign="welcome", treatment="pct10")
    assert [(r.campaign, r.segment) for r in only.rows] == [("welcome", {"treatment": "pct10"})]
    assert (
        only.rows[0].n_control
        == next(r for r in report.rows if labels[0] and r.segment["treatment"] == "pct10").n_control
    )


def test_segments_by_attribute_feature_and_decision_date(built: Built) -> None:
    report = uplift_report(
        built.engine, as_of=AS_OF, campaign="welcome", by=["country", "lifecycle"]
    )
    prog = built.programme
    cut = START + timedelta(days=5)

    def key(d: Decision) -> tuple:
        stage = "new" if d.run_date < cut else "active"
        return (d.campaign_id, prog.country[d.customer_id], stage)

    ref = _reference(built.engine, key)
    assert {(r.segment["country"], r.segment["lifecycle"]) for r in report.rows} == {
        (c, s) for (camp, c, s) in ref if camp == "welcome"
    }
    for row in report.rows:
        _check_row(row, ref[("welcome", row.segment["country"], row.segment["lifecycle"])])
    # The planted effect: pct10 adds 40 for Spain only, so Spain gains most.
    spain = [r for r in report.rows if r.segment["country"] == "ES"]
    others = [r for r in report.rows if r.segment["country"] != "ES"]
    assert min(r.uplift for r in spain) > max(r.uplift for r in others)
    numeric = uplift_report(built.engine, as_of=AS_OF, campaign="welcome", by=["age", "vip"])
    ages = {r.segment["age"] for r in numeric.rows}
    assert "unknown" in ages and len(ages) == 6  # five quintile ranges and the unknowns
    assert {r.segment["vip"] for r in numeric.rows} == {"true", "false"}
    total = sum(r.n_test + r.n_control for r in numeric.rows)
    base = uplift_report(built.engine, as_of=AS_OF, campaign="welcome").rows[0]
    assert total == base.n_test + base.n_control
    feat = uplift_report(built.engine, as_of=AS_OF, campaign="welcome", by=["lifecycle_stage"])
    assert {r.segment["lifecycle_stage"] for r in feat.rows} == {"active", "at_risk"}


def test_period_filters_and_open_windows(built: Built) -> None:
    first = START + timedelta(days=3)
    last = START + timedelta(days=6)
    report = uplift_report(built.engine, as_of=AS_OF, since=first, until=last)
    expected = [d for d in built.programme.decisions if first <= d["run_date"] <= last]
    assert report.decisions == len(expected)
    assert report.since >= first and report.until <= last
    early = START + timedelta(days=12)
    open_report = uplift_report(built.engine, as_of=early)
    closed = [d for d in built.programme.decisions if d["window_end"] <= early]
    assert open_report.decisions == len(closed)
    assert open_report.still_open == len(built.programme.decisions) - len(closed)
    assert any("still inside their measurement window" in n for n in open_report.notes)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"campaign": "ghost"}, CampaignNotFound, "no campaign with id 'ghost'"),
        ({"campaign": "welcome", "treatment": "nope"}, NotFound, "has no treatment 'nope'"),
        ({"treatment": "pct10"}, InputError, "--treatment needs --campaign"),
        ({"by": ["colour"]}, InputError, "unknown --by field 'colour'"),
        ({"by": ["signup_date"]}, InputError, "is a date attribute"),
        ({"by": ["rfm"]}, InputError, "no rfm segment history yet"),
        ({"by": ["country", "country"]}, InputError, "names 'country' twice"),
        ({"campaign": "nocontrol"}, InputError, "has no control group"),
        ({"since": date(2025, 1, 1), "until": date(2025, 2, 1)}, InputError, "no decisions"),
        ({"since": date(2026, 4, 1), "until": date(2026, 3, 1)}, InputError, "is after"),
    ],
)
def test_bad_input_is_one_clear_error(
    built: Built, kwargs: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        uplift_report(built.engine, as_of=AS_OF, **kwargs)


def test_nothing_closed_yet_says_until_when(built: Built) -> None:
    with pytest.raises(InputError, match="no measurement window has closed yet"):
        uplift_report(built.engine, as_of=START + timedelta(days=2))


def test_programme_matches_events_and_the_global_control_hash(built: Built) -> None:
    until = AS_OF - timedelta(days=1)
    report = programme_uplift(built.engine, as_of=AS_OF, since=START, until=until)
    prog = built.programme
    value = dict.fromkeys(prog.customers, 0.0)
    with Session(built.engine) as s:
        for e in s.exec(select(Event)):
            if START <= e.occurred_at.date() <= until:
                value[e.customer_id] += e.amount
        for d, r in s.exec(select(Decision, Reward).where(Decision.id == Reward.decision_id)):
            if START <= d.run_date <= until:
                value[d.customer_id] -= r.cost
    gc = in_global_control(customer_keys(prog.customers, "reports"), 0.1)
    assert {c for c, g in zip(prog.customers, gc, strict=True) if g} == prog.global_control
    x0 = np.array([value[c] for c, g in zip(prog.customers, gc, strict=True) if g])
    x1 = np.array([value[c] for c, g in zip(prog.customers, gc, strict=True) if not g])
    ref = stats.ttest_ind(x1, x0, equal_var=False)
    assert (report.n_control, report.n_rest) == (len(x0), len(x1))
    assert report.uplift == pytest.approx(x1.mean() - x0.mean())
    assert report.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    ci = ref.confidence_interval()
    assert (report.uplift_low, report.uplift_high) == pytest.approx((ci.low, ci.high), rel=1e-6)
    assert report.incremental == pytest.approx((x1.mean() - x0.mean()) * len(x1))


def test_personas_find_spain_and_are_seeded(built: Built) -> None:
    a = persona_report(built.engine, campaign="welcome", as_of=AS_OF, min_leaf=40, seed=2)
    b = persona_report(built.engine, campaign="welcome", as_of=AS_OF, min_leaf=40, seed=2)
    assert a.as_dict() == b.as_dict()
    leaves = a.tree.leaves
    assert len(leaves) >= 2, [n.description for n in a.tree.nodes]
    # Planted: pct10 adds 40 in Spain only, guide adds 5 everywhere.
    best = max(leaves, key=lambda n: n.effect)
    assert best.description == "country = ES" and best.label == "highly effective"
    assert "keep sending" in best.recommendation
    for leaf in leaves:
        if leaf is not best:
            assert "ES" not in leaf.description or "not in" in leaf.description
            assert leaf.label in ("somewhat effective", "not effective")
    assert "country" in a.features and "lifecycle" in a.features
    with pytest.raises(InputError, match="unknown --features field 'shoe_size'"):
        persona_report(built.engine, campaign="welcome", as_of=AS_OF, features=["shoe_size"])
    with pytest.raises(InputError, match="has no control group"):
        persona_report(built.engine, campaign="nocontrol", as_of=AS_OF)
    with pytest.raises(CampaignNotFound):
        persona_report(built.engine, campaign="ghost", as_of=AS_OF)


def test_empty_database_errors(engine: sa.Engine) -> None:
    build_programme(engine, 60, seed=3)
    with pytest.raises(InputError, match="no decisions for any campaign between"):
        uplift_report(engine, as_of=AS_OF, since=date(2020, 1, 1), until=date(2020, 2, 1))
    with pytest.raises(InputError, match="empty period"):
        programme_uplift(engine, as_of=AS_OF, since=date(2026, 5, 1), until=date(2026, 4, 1))


def test_large_sqlite_reads_in_a_worker_process_give_the_same_report(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.reports import columnar

    before = uplift_report(built.engine, as_of=AS_OF, by=["country"])
    monkeypatch.setattr(columnar, "BACKGROUND_MIN_ROWS", 1)
    after = uplift_report(built.engine, as_of=AS_OF, by=["country"])
    assert [r.as_dict() for r in after.rows] == [r.as_dict() for r in before.rows]


def test_a_persona_split_round_trips_through_the_plan(built: Built, tmp_path) -> None:
    from sqlmodel import Session

    from orchestrator import admin
    from orchestrator.features import rule_schema
    from orchestrator.measure.personas import HIGHLY, NOT_EFFECTIVE
    from orchestrator.plan import load_plan_file
    from orchestrator.plan_diff import diff_plans
    from orchestrator.reports.persona_plan import split_plan_yaml
    from orchestrator.rules import Rule, evaluate_row
    from orchestrator.storage.plan_repo import read_plan

    report = persona_report(
        built.engine, campaign="welcome", as_of=AS_OF, features=["country"], min_leaf=40, seed=2
    )
    leaves = report.tree.leaves
    assert len(leaves) >= 2
    # Whatever the labels of this small sample, say the worst group does not work.
    worst = min(leaves, key=lambda n: n.effect)
    for leaf in leaves:
        leaf.label = NOT_EFFECTIVE if leaf is worst else HIGHLY
    with pytest.raises(InputError, match="nothing to split"):
        worst.label = HIGHLY
        split_plan_yaml(built.engine, report, today=AS_OF)
    worst.label = NOT_EFFECTIVE
    path = tmp_path / "split.yaml"
    path.write_text(split_plan_yaml(built.engine, report, today=AS_OF))
    with Session(built.engine) as session:
        before = read_plan(session)
    after, _ = load_plan_file(path)
    changes = [str(c) for c in diff_plans(before, after)]
    assert len(changes) >= 2 and any("welcome_rest" in c for c in changes), changes
    rest, kept = after.campaign("welcome_rest"), after.campaign("welcome")
    assert rest is not None and kept is not None and rest.status == "paused"
    assert rest.treatments == kept.treatments and rest.channel == kept.channel
    assert len(after.campaigns) == len(before.campaigns) + 1
    # Applied, the two targets split the campaign's customers along the worst group.
    original = tmp_path / "original.yaml"
    original.write_text(admin.export_plan(built.engine))
    admin.apply_plan_file(built.engine, path, actor="test")
    admin.apply_plan_file(built.engine, original, actor="test")  # the module's fixture, as it was
    schema = rule_schema({"vip": "bool", "country": "string"})
    group = Rule.compile(report.tree.rule(worst, {"country": ("country", "string")}), schema)
    moved = 0
    for country in ("ES", "FR", "DE"):
        row = {"vip": False, "country": country}
        took = evaluate_row(Rule.compile(rest.target, schema).node, row)
        stayed = evaluate_row(Rule.compile(kept.target, schema).node, row)
        assert took == evaluate_row(group.node, row) and stayed == (not took), rest.target
        moved += took
    assert 1 <= moved <= 2


def test_the_plans_currency_is_named_by_the_reports(built: Built, tmp_path) -> None:
    from orchestrator import admin

    assert uplift_report(built.engine, as_of=AS_OF).currency is None
    text = admin.export_plan(built.engine)
    original = tmp_path / "original.yaml"
    original.write_text(text)
    try:
        _check_currency(built, tmp_path, text)
    finally:  # the fixture is shared by the module: leave its plan as it was
        admin.apply_plan_file(built.engine, original, actor="test")


def _check_currency(built: Built, tmp_path, text: str) -> None:
    from orchestrator import admin
    from orchestrator.errors import PlanError
    from orchestrator.reports.html import uplift_html
    from orchestrator.reports.render import _header

    path = tmp_path / "plan.yaml"
    path.write_text(text.replace("settings:\n", "settings:\n  currency: EUR\n", 1))
    admin.apply_plan_file(built.engine, path, actor="test")
    report = uplift_report(built.engine, as_of=AS_OF, detail=True)
    assert report.currency == "EUR" and report.as_dict()["currency"] == "EUR"
    assert "amounts in EUR" in _header(report) and "amounts in EUR" in uplift_html(report)
    assert "currency: EUR" in admin.export_plan(built.engine)
    path.write_text(text.replace("settings:\n", "settings:\n  currency: euro\n", 1))
    with pytest.raises(PlanError, match="currency"):
        admin.apply_plan_file(built.engine, path, actor="test")
