"""Basket analysis: rule counts equal a brute-force count on random purchase histories, the next
category is the best rule's, and the refresh writes both fields."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.segments import basket, refresh_segments
from tests.segments.helpers_segments import add_events, simulated_shop

CATS = ("shoes", "home", "beauty", "toys")

purchase = st.tuples(st.integers(0, 7), st.integers(-1, 3), st.integers(0, 20))  # who, cat, day


@settings(max_examples=60, deadline=None)
@given(st.lists(purchase, max_size=60), st.lists(st.integers(-1, 2), min_size=8, max_size=8))
def test_rule_counts_equal_a_brute_force_count(
    purchases: list[tuple[int, int, int]], group: list[int]
) -> None:
    owner, code = (np.array([p[i] for p in purchases], dtype=np.int64) for i in range(2))
    bought = basket.baskets(owner, code, 8, len(CATS))
    rules = basket.count_rules(bought, np.array(group), 3, CATS)
    conf, lift, support = rules.confidence(), rules.lift(), rules.support()
    for g in range(3):
        members = [i for i in range(8) if group[i] == g]
        assert rules.customers[g] == len(members)
        sets = {i: {c for o, c, _ in purchases if o == i and c >= 0} for i in members}
        for x in range(4):
            with_x = [i for i in members if x in sets[i]]
            assert rules.buyers[g, x] == len(with_x)
            for y in range(4):
                n_xy = sum(1 for i in with_x if y in sets[i]) if x != y else 0
                assert rules.both[g, x, y] == n_xy
                if members:
                    assert support[g, x, y] == pytest.approx(n_xy / len(members))
                if with_x:
                    assert conf[g, x, y] == pytest.approx(n_xy / len(with_x))
                share_y = sum(1 for i in members if y in sets[i]) / max(len(members), 1)
                if with_x and share_y:
                    assert lift[g, x, y] == pytest.approx(n_xy / len(with_x) / share_y)


def test_the_next_category_is_the_best_rule_not_yet_bought() -> None:
    # 100 customers: every shoes buyer went on to buy home, half of the home buyers then beauty.
    rng = np.random.default_rng(0)
    rows: list[tuple[int, int, int]] = []
    for i in range(60):
        rows += [(i, 0, 1), (i, 1, 5)]
        if i % 2:
            rows.append((i, 2, 9))
    rows += [(i, 3, int(rng.integers(0, 10))) for i in range(60, 100)]  # toys only
    rows += [(100, 0, 3), (101, 1, 3)]  # two new customers
    owner, code, day = (np.array([r[k] for r in rows]) for k in range(3))
    bought = basket.baskets(owner, code, 102, 4)
    group = np.zeros(102, dtype=np.int64)
    rules = basket.count_rules(bought, group, 1, CATS)
    best, confidence = basket.next_categories(bought, group, rules)
    # Customer 100 is a shoes buyer too (who has not bought home yet): 60 of 61.
    assert CATS[best[100]] == "home" and confidence[100] == pytest.approx(60 / 61)
    assert CATS[best[101]] == "shoes" and confidence[101] == pytest.approx(60 / 61)
    assert CATS[best[0]] == "beauty" and confidence[0] == pytest.approx(30 / 61)
    assert best[1] == -1  # bought every category the rules know of
    assert best[0] == -1 or CATS[best[0]] != "shoes"  # never a category already bought
    # A toys-only customer: no toys buyer bought anything else.
    assert best[70] == -1 and np.isnan(confidence[70])
    top = basket.top_rules(rules, ["all"])["all"]
    assert top[0]["bought"] in CATS and top[0]["lift"] >= top[-1]["lift"]


def test_the_refresh_writes_next_categories(engine: sa.Engine) -> None:
    # Planted: 60 customers bought shoes, then home; one has bought only shoes so far.
    events = simulated_shop(300, date(2025, 4, 1), 365, seed=4)
    for i in range(60):
        events += [
            (f"S{i}", "2025-06-01", "purchase", 40.0, 0.0, "shoes", "web"),
            (f"S{i}", "2025-07-01", "purchase", 30.0, 0.0, "home", "web"),
        ]
    events.append(("NEXT", "2026-03-01", "purchase", 40.0, 0.0, "shoes", "web"))
    add_events(engine, events)
    result = refresh_segments(engine, as_of=date(2026, 3, 31))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT next_category, next_category_confidence, preferred_category "
                "FROM customer_features"
            )
        ).all()
    got = [r for r in rows if r[0] is not None]
    assert got and all(0 < r[1] <= 1 for r in got)
    assert all(r[1] is None for r in rows if r[0] is None)
    assert all(r[0] != r[2] for r in got)  # the preferred category was bought already
    assert conn_next(engine, "NEXT") == ("home",)
    rules = [r for rows in result.model["cross_sell"].values() for r in rows]
    assert any(
        r["bought"] == "shoes" and r["then"] == "home" and r["confidence"] > 0.9 for r in rules
    )


def conn_next(engine: sa.Engine, customer: str) -> tuple[str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT next_category FROM customer_features WHERE customer_id = :c"),
            {"c": customer},
        ).one()
    return (row[0],)


def test_purchases_without_categories_give_no_next_category() -> None:
    bought = basket.baskets(np.array([0, 1]), np.array([-1, -1]), 3, 0)
    rules = basket.count_rules(bought, np.array([0, 0, -1]), 1, ())
    best, confidence = basket.next_categories(bought, np.array([0, 0, -1]), rules)
    assert best.tolist() == [-1, -1, -1] and np.isnan(confidence).all()
    assert basket.top_rules(rules, ["g"]) == {"g": []}
