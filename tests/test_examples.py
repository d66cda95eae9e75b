"""The example data set: reproducible from its seed, well-formed, and a plan that hangs together."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GENERATE = EXAMPLES / "generate.py"

CUSTOMER_COLUMNS = [
    "customer_id",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "birth_date",
    "signup_date",
    "country",
    "gender",
    "age",
    "loyalty_tier",
    "store_region",
]
EVENT_COLUMNS = [
    "event_id",
    "customer_id",
    "occurred_at",
    "type",
    "amount",
    "discount",
    "category",
    "channel",
]
ATTRIBUTE_TYPES = {
    "email_opt_in": "bool",
    "sms_opt_in": "bool",
    "push_opt_in": "bool",
    "birth_date": "date",
    "signup_date": "date",
    "country": "string",
    "gender": "string",
    "age": "number",
    "loyalty_tier": "string",
    "store_region": "string",
}
BUILTIN_FIELDS = {
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "r_score",
    "f_score",
    "m_score",
    "p_alive",
    "expected_purchases",
    "expected_value",
    "churn_risk",
    "discount_affinity",
    "days_to_birthday",
    "days_since_signup",
    "lifecycle_stage",
    "rfm_cell",
    "preferred_category",
    "preferred_channel",
}
RULE_WORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def generate(out: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(GENERATE), "--out", str(out), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def customers() -> tuple[list[str], list[dict[str, str]]]:
    return read_csv(EXAMPLES / "customers.csv")


@pytest.fixture(scope="module")
def events() -> tuple[list[str], list[dict[str, str]]]:
    return read_csv(EXAMPLES / "events.csv")


@pytest.fixture(scope="module")
def plan() -> dict[str, Any]:
    with (EXAMPLES / "plan.yaml").open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


# --- the generator -------------------------------------------------------------------------


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(first, "--customers", "300", "--seed", "11")
    generate(second, "--customers", "300", "--seed", "11")
    generate(other, "--customers", "300", "--seed", "12")
    for name in ("customers.csv", "events.csv", "plan.yaml"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "events.csv").read_bytes() != (other / "events.csv").read_bytes()


def test_default_run_reproduces_the_committed_files(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in ("customers.csv", "events.csv", "plan.yaml"):
        committed = (EXAMPLES / name).read_bytes()
        assert (tmp_path / name).read_bytes() == committed, (
            f"examples/{name} is stale: rerun `python examples/generate.py`"
        )


# --- the data files ------------------------------------------------------------------------


def test_customers_are_well_formed(customers: tuple[list[str], list[dict[str, str]]]) -> None:
    header, rows = customers
    assert header == CUSTOMER_COLUMNS
    assert 4000 <= len(rows) <= 6000
    ids = [r["customer_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"C\d{6}", i) for i in ids)
    for row in rows:
        for flag in ("email_opt_in", "sms_opt_in", "push_opt_in"):
            assert row[flag] in ("true", "false")
        signup = date.fromisoformat(row["signup_date"])
        assert date(2023, 11, 1) <= signup <= date(2026, 10, 31)
        if row["birth_date"]:
            assert date.fromisoformat(row["birth_date"]) < signup
        assert 18 <= int(row["age"]) <= 100
        assert row["country"] in {"ES", "FR", "DE", "IT", "PT"}
        assert row["gender"] in {"f", "m", "x", ""}
        assert row["loyalty_tier"] in {"bronze", "silver", "gold"}
        assert row["store_region"] in {"north", "south", "east", "west", "online"}
    assert any(not r["birth_date"] for r in rows)
    assert any(not r["gender"] for r in rows)
    assert Counter(r["country"] for r in rows).most_common(1)[0][0] == "ES"


def test_events_are_well_formed(events: tuple[list[str], list[dict[str, str]]]) -> None:
    header, rows = events
    assert header == EVENT_COLUMNS
    assert 50_000 <= len(rows) <= 80_000
    ids = [r["event_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    times = [r["occurred_at"] for r in rows]
    assert all(ISO_UTC.match(t) for t in times)
    assert times == sorted(times)
    assert times[0] >= "2025-11-01" and times[-1] < "2026-11-01"
    kinds = Counter(r["type"] for r in rows)
    assert set(kinds) == {"purchase", "return", "visit", "signup", "cart_abandoned"}
    assert kinds["purchase"] > kinds["return"] > 0
    assert kinds["visit"] > kinds["cart_abandoned"] > 0  # the journeys' entry events
    for row in rows:
        amount, discount = float(row["amount"]), float(row["discount"])
        assert 0.0 <= discount <= 0.3
        assert row["category"] in {"apparel", "shoes", "beauty", "home", "sports"}
        assert row["channel"] in {"web", "store", "app"}
        if row["type"] == "purchase":
            assert amount > 0
        elif row["type"] == "return":
            assert amount < 0
        else:
            assert amount == 0 and discount == 0
    discounts = [float(r["discount"]) for r in rows if r["type"] == "purchase"]
    assert 0.5 < discounts.count(0.0) / len(discounts) < 0.95


def test_each_signup_in_the_events_year_has_its_event(
    customers: tuple[list[str], list[dict[str, str]]],
    events: tuple[list[str], list[dict[str, str]]],
) -> None:
    joined = {r["customer_id"]: r["signup_date"] for r in customers[1]}
    signups = {r["customer_id"]: r["occurred_at"][:10] for r in events[1] if r["type"] == "signup"}
    expected = {c: d for c, d in joined.items() if d >= "2025-11-01"}
    assert signups.keys() == expected.keys()
    for cid, day in signups.items():  # the day in UTC can be the evening before in Madrid
        assert day in (expected[cid], _day_before(expected[cid])), cid


def _day_before(day: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def test_events_never_precede_signup(
    customers: tuple[list[str], list[dict[str, str]]],
    events: tuple[list[str], list[dict[str, str]]],
) -> None:
    signup = {r["customer_id"]: r["signup_date"] for r in customers[1]}
    for row in events[1]:
        assert row["occurred_at"][:10] >= signup[row["customer_id"]], row


def test_behaviour_is_heterogeneous(
    customers: tuple[list[str], list[dict[str, str]]],
    events: tuple[list[str], list[dict[str, str]]],
) -> None:
    """Enough spread for RFM and BG/NBD: one-timers, heavy buyers, churners, recent signups."""
    purchases = Counter(r["customer_id"] for r in events[1] if r["type"] == "purchase")
    last = {r["customer_id"]: r["occurred_at"] for r in events[1] if r["type"] == "purchase"}
    n = len(customers[1])
    assert 0.02 < (n - len(purchases)) / n < 0.6  # no purchase in the year
    assert 0.1 < sum(1 for c in purchases.values() if c == 1) / len(purchases) < 0.5
    assert max(purchases.values()) >= 20
    assert 0.1 < sum(1 for t in last.values() if t < "2026-05-01") / len(last) < 0.5
    assert sum(1 for r in customers[1] if r["signup_date"] >= "2026-01-01") > n // 10


# --- the plan ------------------------------------------------------------------------------


def test_plan_has_the_expected_shape(plan: dict[str, Any]) -> None:
    assert plan["version"] == 1
    assert set(plan) == {
        "version",
        "settings",
        "attributes",
        "caps",
        "campaigns",
        "exclusions",
        "journeys",
    }
    assert plan["settings"]["policy"]["name"] == "uniform"
    assert plan["attributes"] == ATTRIBUTE_TYPES
    assert set(plan["attributes"]) == set(CUSTOMER_COLUMNS) - {"customer_id"}


def test_plan_campaigns_hang_together(plan: dict[str, Any]) -> None:
    campaigns = plan["campaigns"]
    assert len(campaigns) >= 14
    ids = [c["id"] for c in campaigns]
    assert len(set(ids)) == len(ids)
    priorities = [c["priority"] for c in campaigns if "priority" in c]
    assert 3 <= len(priorities) == len(set(priorities))
    assert {c["channel"] for c in campaigns} == {"email", "sms", "push"}
    assert sum(c.get("status") == "paused" for c in campaigns) == 1
    assert sum(len(c["treatments"]) >= 2 for c in campaigns) >= 5
    for c in campaigns:
        treatment_ids = [t["id"] for t in c["treatments"]]
        assert len(set(treatment_ids)) == len(treatment_ids), c["id"]
        assert c.get("start", date.min) <= c.get("end", date.max), c["id"]

    dated = [c for c in campaigns if "start" in c]
    assert any(c["end"] < date(2026, 11, 1) for c in dated)  # one already over
    assert any(
        c["start"] <= date(2026, 11, 30) and c["end"] >= date(2026, 12, 1) for c in dated
    )  # one running through November into December


def test_plan_exclusions_and_caps_name_real_things(plan: dict[str, Any]) -> None:
    ids = {c["id"] for c in plan["campaigns"]}
    pairs = [(e["if_received"], e["exclude"]) for e in plan["exclusions"]]
    assert 3 <= len(pairs) == len(set(pairs))
    for received, excluded in pairs:
        assert received in ids and excluded in ids
        assert received != excluded
    channels = {c["channel"] for c in plan["campaigns"]}
    caps = plan["caps"]
    assert any(cap["scope"] == "global" for cap in caps)
    assert {cap["channel"] for cap in caps if cap["scope"] == "channel"} == channels


def test_plan_targets_use_only_known_fields(plan: dict[str, Any]) -> None:
    known = set(plan["attributes"]) | BUILTIN_FIELDS
    for c in plan["campaigns"]:
        code = re.sub(r"\"[^\"]*\"|'[^']*'", "", c["target"])
        names = set(re.findall(r"\b[A-Za-z_]\w*", code)) - RULE_WORDS
        assert names <= known, f"{c['id']}: unknown fields {sorted(names - known)}"


def test_the_customers_report_recovers_the_planted_relations(tmp_path: Path) -> None:
    """Deep-discount buyers are worth less, larger orders more, with intervals apart."""
    from orchestrator import admin
    from orchestrator.imports.customers import import_customers
    from orchestrator.imports.events import import_events
    from orchestrator.reports.future_value import future_value_report
    from orchestrator.segments import refresh_segments
    from orchestrator.storage.db import init_schema, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'examples.db'}")
    init_schema(engine)
    admin.apply_plan_file(engine, EXAMPLES / "plan.yaml", actor="test")
    import_customers(engine, EXAMPLES / "customers.csv")
    import_events(engine, EXAMPLES / "events.csv")
    refresh_segments(engine, as_of=date(2026, 11, 1))
    by_discount = {
        r.labels["discount_band"]: r
        for r in future_value_report(engine, by=["discount_band"], tree=False).rows
    }
    deep = by_discount["deep (> 20%)"]
    for lighter in ("none", "small (≤ 10%)"):
        assert deep.ci_high < by_discount[lighter].ci_low
    bands = future_value_report(engine, by=["order_value_band"], tree=False).rows
    known = [r for r in bands if r.labels["order_value_band"] != "unknown"]
    assert known[0].ci_high < known[-1].ci_low  # smallest orders against the largest


def test_the_tour_ends_on_measured_uplift_once_the_customers_answer(tmp_path: Path) -> None:
    """README tour, steps 2-4: a week of runs, the customers' answers, an uplift table with
    intervals (the example events alone end before the first run)."""
    import importlib.util
    import math
    from datetime import timedelta

    from orchestrator import admin
    from orchestrator.export import export_send_list
    from orchestrator.imports.customers import import_customers
    from orchestrator.imports.events import import_events
    from orchestrator.reports.uplift import uplift_report
    from orchestrator.run import run_daily
    from orchestrator.segments import refresh_segments
    from orchestrator.storage.db import init_schema, make_engine

    spec = importlib.util.spec_from_file_location("respond", EXAMPLES / "respond.py")
    assert spec is not None and spec.loader is not None
    respond = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(respond)

    engine = make_engine(f"sqlite:///{tmp_path / 'tour.db'}")
    init_schema(engine)
    admin.apply_plan_file(engine, EXAMPLES / "plan.yaml", actor="test")
    import_customers(engine, EXAMPLES / "customers.csv")
    import_events(engine, EXAMPLES / "events.csv")
    refresh_segments(engine, as_of=date(2026, 11, 1))
    sends = []
    for k in range(7):
        day = date(2026, 11, 2) + timedelta(days=k)
        run_daily(engine, day=day)
        sends.append(tmp_path / f"sends-{day}.csv")
        export_send_list(engine, day=day, out=sends[-1])
    out = tmp_path / "responses.csv"
    respond.main([*map(str, sends), "--until", "2026-11-30", "--out", str(out)])
    again = tmp_path / "again.csv"
    respond.main([*map(str, sends), "--until", "2026-11-30", "--out", str(again)])
    assert out.read_bytes() == again.read_bytes()  # the same sends, the same answers
    import_events(engine, out)
    report = uplift_report(engine, as_of=date(2026, 11, 30))
    measured = [r for r in report.rows if r.status == "ok"]
    assert measured, [(r.campaign, r.status) for r in report.rows]
    assert all(math.isfinite(r.uplift_low) and math.isfinite(r.uplift_high) for r in measured)
    assert sum(r.n_test for r in report.rows) > 1_000
