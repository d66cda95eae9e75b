"""`orch report customers`: future value by layer with intervals, bands from the plan, and an
honest tree that finds a planted relation; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import sqlalchemy as sa

from orchestrator import admin
from orchestrator.errors import InputError
from orchestrator.plan import BandSpec
from orchestrator.reports.future_value import band_codes, future_value_report
from orchestrator.storage.models import CustomerFeatures, utcnow
from tests.reports.test_cli import orch


def seed(engine: sa.Engine, n: int = 2_000) -> np.ndarray:
    """Customers whose future value is planted: deep-discount buyers are worth 40 less."""
    rng = np.random.default_rng(1)
    depth = rng.choice([0.0, 0.05, 0.15, 0.3], size=n)
    value = 100.0 - 40.0 * (depth > 0.2) + rng.normal(0, 10, n)
    now = utcnow()
    rows = [
        {
            "customer_id": f"C{i:05d}",
            "as_of": date(2026, 11, 1),
            "updated_at": now,
            "lifecycle_stage": "active" if i % 3 else "at_risk",
            "mean_discount": float(depth[i]),
            "mean_order_value": float(rng.gamma(4, 15)),
            "expected_value": float(value[i]),
            "discount_affinity": float(depth[i] > 0),
        }
        for i in range(n)
    ]
    rows.append({**{k: None for k in rows[0]}, "customer_id": "PROSPECT", **rows[0] | {}})
    rows[-1].update(customer_id="PROSPECT", expected_value=None, mean_discount=None)
    with engine.begin() as conn:
        conn.execute(sa.insert(CustomerFeatures.__table__), rows)  # type: ignore[arg-type]
    return value


def test_layers_have_intervals_that_cover_their_mean_and_add_up(engine: sa.Engine) -> None:
    value = seed(engine)
    report = future_value_report(engine, by=["discount_band", "lifecycle_stage"], tree=False)
    assert report.customers == len(value)  # the prospect has no prediction
    assert sum(r.customers for r in report.rows) == len(value)
    assert sum(r.total for r in report.rows) == pytest.approx(value.sum())
    assert report.overall.mean == pytest.approx(value.mean())
    bands = {r.labels["discount_band"] for r in report.rows}
    assert bands == {"none", "small (≤ 10%)", "medium (10-20%)", "deep (> 20%)"}
    for r in report.rows:
        assert r.ci_low < r.mean < r.ci_high
    deep = [r for r in report.rows if r.labels["discount_band"].startswith("deep")]
    rest = [r for r in report.rows if not r.labels["discount_band"].startswith("deep")]
    # The planted relation, with intervals that exclude no effect.
    assert max(r.ci_high for r in deep) < min(r.ci_low for r in rest)


def test_the_honest_tree_finds_the_planted_split(engine: sa.Engine) -> None:
    seed(engine)
    report = future_value_report(engine, by=[], min_leaf=100, depth=1)
    assert len(report.tree) == 2
    top, bottom = report.tree
    assert "discount_band" in top.rule or "mean_discount" in top.rule
    assert top.mean - bottom.mean == pytest.approx(40, abs=5)
    assert bottom.ci_high < top.ci_low
    # Judged on the other half: about half of the customers in the leaves.
    assert 800 < top.customers + bottom.customers < 1_200


def test_bands_from_the_plan_and_bad_input(engine: sa.Engine) -> None:
    seed(engine)
    mine = {
        "order_size": BandSpec(field="mean_order_value", edges=[50, 100], labels=["S", "M", "L"])
    }
    report = future_value_report(engine, by=["order_size"], bands=mine, tree=False)
    assert [r.labels["order_size"] for r in report.rows] == ["S", "M", "L"]
    with pytest.raises(InputError, match="unknown --by field 'nonsense'"):
        future_value_report(engine, by=["nonsense"])
    with pytest.raises(ValueError, match="3 labels"):
        BandSpec(field="x", edges=[1.0], labels=["a", "b", "c"])
    codes, labels = band_codes(np.array([1.0, 2.0, np.nan]), BandSpec(field="x"))
    assert labels[-1] == "unknown" and codes[2] == len(labels) - 1


def test_no_prediction_yet_is_one_clear_error(engine: sa.Engine) -> None:
    with pytest.raises(InputError, match="no customer has a predicted value yet"):
        future_value_report(engine)


def test_the_command_line_table_json_and_csv(engine: sa.Engine, db_url: str, tmp_path) -> None:
    seed(engine)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "version: 1\nsettings:\n  bands:\n    value_tier: {field: mean_order_value, "
        "edges: [60], labels: [small, large]}\ncampaigns: []\n"
    )
    admin.apply_plan_file(engine, plan, actor="test")
    table = orch(db_url, "report", "customers", "--by", "discount_band", columns=120)
    assert table.returncode == 0, table.stderr
    assert "deep (> 20%)" in table.stdout and "What separates" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 120
    js = orch(db_url, "report", "customers", "--by", "value_tier", "--format", "json")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert {r["value_tier"] for r in data["rows"]} == {"small", "large"} and data["tree"]
    csv = orch(db_url, "report", "customers", "--by", "lifecycle_stage", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("lifecycle_stage,")
    bad = orch(db_url, "report", "customers", "--by", "nope")
    assert bad.returncode == 2 and "unknown --by field 'nope'" in bad.stderr


def test_the_html_page_shows_future_value_by_band(engine: sa.Engine) -> None:
    from orchestrator.reports.html import customers_section
    from orchestrator.reports.page import page_parts
    from orchestrator.reports.uplift import UpliftReport

    seed(engine)
    report = future_value_report(engine, by=["discount_band"])
    html = customers_section(report)
    assert "Customers: predicted future value" in html and "<img" in html
    assert "deep (&gt; 20%)" in html and "What separates" in html
    # The page's parts carry it whenever the value model has predictions.
    empty = UpliftReport.__new__(UpliftReport)
    empty.campaign, empty.treatment, empty.campaign_rows = "none", None, []
    empty.as_of, empty.since, empty.until = date(2026, 11, 2), None, None
    parts = page_parts(engine, empty)
    assert parts.customers is not None and parts.customers.by == ["discount_band"]
