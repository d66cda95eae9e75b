"""Simulated programmes with known effects: intervals cover the truth at about the nominal rate,
the persona tree finds the planted sub-groups (and invents none), the timeline is exact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from orchestrator.measure.personas import (
    HARMFUL,
    HIGHLY,
    Feature,
    UpliftTree,
    _bin,
    _route,
    grow_uplift_tree,
)
from orchestrator.measure.uplift import ArmStats, cluster_moments, compare_arms
from orchestrator.reports.data import Outcomes
from orchestrator.reports.uplift import _rows, timeline

# Per segment: conversion rate and mean basket of (control, test).
SEGMENTS = [
    ((0.20, 40.0), (0.26, 40.0)),
    ((0.30, 60.0), (0.30, 66.0)),
    ((0.10, 30.0), (0.09, 30.0)),
]
R = 600  # replications: 1,800 intervals of each kind


def _simulate(rng: np.random.Generator, n1: int, n0: int) -> tuple[ArmStats, ArmStats]:
    """One replication: three segments, value = a gamma basket when converted."""
    arms: list[list[tuple[float, ...]]] = [[], []]
    for control, test in SEGMENTS:
        for arm, ((p, basket), n) in enumerate(((control, n0), (test, n1))):
            converted = rng.random(n) < p
            value = np.where(converted, rng.gamma(2.0, basket / 2.0, n), 0.0)
            arms[arm].append((n, value.mean(), value.var(ddof=1), converted.sum()))
    out = []
    for rows in arms:
        cols = [np.array(col, dtype=float) for col in zip(*rows, strict=True)]
        out.append(ArmStats(cols[0], cols[1], cols[2], cols[3]))
    return out[1], out[0]


def test_intervals_cover_the_planted_uplift_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    true_value = np.array([t[0] * t[1] - c[0] * c[1] for c, t in SEGMENTS])
    true_conv = np.array([t[0] - c[0] for c, t in SEGMENTS])
    true_rel = np.array([t[0] * t[1] / (c[0] * c[1]) - 1 for c, t in SEGMENTS])
    hits = {"value": 0, "conversion": 0, "relative": 0, "incremental": 0}
    n1, n0 = 400, 200
    for _ in range(R):
        test, control = _simulate(rng, n1, n0)
        cmp = compare_arms(test, control)
        assert (cmp.status == "ok").all()
        hits["value"] += int(((cmp.value.low <= true_value) & (true_value <= cmp.value.high)).sum())
        hits["conversion"] += int(
            ((cmp.conversion.low <= true_conv) & (true_conv <= cmp.conversion.high)).sum()
        )
        rel_lo, rel_hi = cmp.relative[1], cmp.relative[2]
        hits["relative"] += int(((rel_lo <= true_rel) & (true_rel <= rel_hi)).sum())
        inc = true_value * n1
        hits["incremental"] += int(
            ((cmp.incremental.low <= inc) & (inc <= cmp.incremental.high)).sum()
        )
    total = R * len(SEGMENTS)
    # Binomial noise of a 95% coverage rate over `total` intervals, 4 standard deviations.
    tolerance = 4 * np.sqrt(0.95 * 0.05 / total)
    for kind, count in hits.items():
        rate = count / total
        assert abs(rate - 0.95) <= tolerance, f"{kind} coverage {rate:.3f}"


def _persona_data(
    n: int, seed: int, planted: bool
) -> tuple[list[Feature], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    country = rng.integers(0, 4, n)
    monetary = rng.gamma(2.0, 50.0, n)
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    noise = rng.integers(0, 3, n)
    treated = rng.random(n) < 0.8
    sweet = (country == 0) & (monetary > 100)
    harmed = country == 3
    tau = (np.where(sweet, 20.0, 0.0) - np.where(harmed, 10.0, 0.0)) if planted else np.zeros(n)
    y = rng.gamma(0.5, 40.0, n) + treated * tau + rng.normal(0.0, 5.0, n)
    features = [
        Feature("country", "category", country, ("ES", "FR", "DE", "IT")),
        Feature("monetary", "number", monetary),
        Feature("age", "number", age),
        Feature("channel", "category", noise, ("email", "sms", "push")),
    ]
    return features, y, treated, sweet, harmed


@pytest.mark.parametrize("criterion", ["interaction", "transformed"])
def test_persona_tree_recovers_the_planted_sub_groups(criterion: str) -> None:
    features, y, treated, sweet, harmed = _persona_data(60_000, seed=5, planted=True)
    tree = grow_uplift_tree(features, y, treated, seed=3, min_leaf=200, criterion=criterion)
    assert tree.nodes[0].n_test + tree.nodes[0].n_control == tree.n_estimate == 30_000
    leaf_of = _leaf_of(tree, features)
    highly = np.isin(leaf_of, [n.id for n in tree.leaves if n.label == HIGHLY])
    harmful = np.isin(leaf_of, [n.id for n in tree.leaves if n.label == HARMFUL])
    # The highly effective leaves are the planted sweet spot (the split lands on a quantile
    # of monetary near 100, so allow a little slack), and the harmful one is Italy.
    assert (highly & sweet).sum() / sweet.sum() >= 0.85
    assert (highly & sweet).sum() / highly.sum() >= 0.85
    assert (harmful == harmed).mean() >= 0.99
    assert not any("channel" in n.description for n in tree.leaves)
    for leaf in tree.leaves:
        assert leaf.recommendation and leaf.label
        assert leaf.low <= leaf.effect <= leaf.high


def _leaf_of(tree: UpliftTree, features: list[Feature]) -> np.ndarray:
    """The leaf of every customer, both halves, binned as the tree binned its training half."""
    n = len(features[0].values)
    train = np.zeros(n, dtype=bool)
    train[np.random.default_rng(tree.seed).permutation(n)[: n // 2]] = True
    return _route(tree.nodes, [_bin(f, train, 16) for f in features], np.arange(n))


def test_persona_tree_is_seeded_and_invents_no_group_in_null_data() -> None:
    splits = 0
    for seed in range(8):
        features, y, treated, *_ = _persona_data(20_000, seed=100 + seed, planted=False)
        tree = grow_uplift_tree(features, y, treated, seed=seed, min_leaf=200)
        splits += len(tree.leaves) > 1
    # Each node splits only past a Bonferroni-corrected 5% test: about 0.4 false trees in 8.
    assert splits <= 2
    features, y, treated, *_ = _persona_data(20_000, seed=1, planted=True)
    a = grow_uplift_tree(features, y, treated, seed=9, min_leaf=200)
    b = grow_uplift_tree(features, y, treated, seed=9, min_leaf=200)
    assert [(n.description, n.effect) for n in a.nodes] == [
        (n.description, n.effect) for n in b.nodes
    ]


def _outcomes(seed: int) -> Outcomes:
    rng = np.random.default_rng(seed)
    m, n_cust = 6000, 900
    customer = rng.integers(0, n_cust, m)
    campaign = rng.integers(0, 3, m)
    test = rng.random(m) < 0.75
    value = np.where(rng.random(m) < 0.3, rng.gamma(2.0, 20.0, m), 0.0) + test * campaign * 3.0
    return Outcomes(
        customer_ids=pa.array([f"C{i}" for i in range(n_cust)]),
        campaigns=["a", "b", "c"],
        treatments=["t"],
        customer=customer,
        campaign=campaign,
        treatment=np.zeros(m, dtype=np.int64),
        day=rng.integers(20000, 20030, m),
        test=test,
        value=value,
        revenue=value,
        cost=np.zeros(m),
        converted=value > 0,
    )


def test_timeline_is_the_report_recomputed_day_by_day() -> None:
    data = _outcomes(3)
    order = {"a": 0, "b": 1, "c": 2}
    line = timeline(data, 0.05, order)
    rows = {r.campaign: r for r in _rows(data, [], 0.05, order)}
    for ci, camp in enumerate(line.campaigns):
        assert line.incremental[ci, -1] == pytest.approx(rows[camp].incremental)
        assert line.low[ci, -1] == pytest.approx(rows[camp].incremental_low)
    # Any day: the same figure as a report on the decisions up to that day.
    for d in (3, 11, 20):
        upto = data.take(np.flatnonzero(data.day <= data.day.min() + d))
        again = {r.campaign: r for r in _rows(upto, [], 0.05, order)}
        for ci, camp in enumerate(line.campaigns):
            assert line.incremental[ci, d] == pytest.approx(again[camp].incremental)
            assert line.high[ci, d] == pytest.approx(again[camp].incremental_high)


def test_rows_are_per_decision_with_customers_as_clusters() -> None:
    data = _outcomes(4)
    rows = _rows(data, [], 0.05, {"a": 0, "b": 1, "c": 2})
    for row in rows:
        c = data.campaigns.index(row.campaign)
        arms = {}
        for arm in (True, False):
            sel = (data.campaign == c) & (data.test == arm)
            per: dict[int, list[float]] = {}
            for cust, value in zip(
                data.customer[sel].tolist(), data.value[sel].tolist(), strict=True
            ):
                per.setdefault(cust, []).append(value)
            n = sum(len(v) for v in per.values())
            mean = sum(sum(v) for v in per.values()) / n
            k = len(per)
            var_mean = k / (k - 1) * sum((sum(v) - mean * len(v)) ** 2 for v in per.values())
            arms[arm] = (k, n, mean, var_mean / n**2)
        (k1, n1, m1, v1), (k0, n0, m0, v0) = arms[True], arms[False]
        assert (row.n_test, row.decisions_test, row.n_control, row.decisions_control) == (
            k1,
            n1,
            k0,
            n0,
        )
        assert row.value_test == pytest.approx(m1) and row.value_control == pytest.approx(m0)
        df = (v1 + v0) ** 2 / (v1**2 / (k1 - 1) + v0**2 / (k0 - 1))
        half = stats.t.ppf(0.975, df) * np.sqrt(v1 + v0)
        assert (row.uplift_low, row.uplift_high) == pytest.approx((m1 - m0 - half, m1 - m0 + half))
        assert row.incremental == pytest.approx((m1 - m0) * n1)


def test_clustered_intervals_keep_their_coverage() -> None:
    """Customers with several decisions and their own spending level: the cluster-robust
    intervals cover the truth at the nominal rate."""
    rng = np.random.default_rng(21)
    reps, k = 500, 120  # replications, customers per arm
    true_uplift = 3.0
    group_of, sums, counts, conv = [], [], [], []
    for r in range(reps):
        for arm in (0, 1):
            n_i = rng.integers(1, 6, k)
            level = rng.gamma(2.0, 10.0, k)  # a customer's own spending level
            for i in range(k):
                x = level[i] + rng.normal(0, 5.0, n_i[i]) + arm * true_uplift
                group_of.append(2 * r + arm)
                sums.append(x.sum())
                counts.append(n_i[i])
                conv.append(int((rng.random(n_i[i]) < 0.3 + 0.2 * (level[i] > 20)).sum()))
    arms = cluster_moments(
        np.array(sums), np.array(counts), np.array(conv), np.array(group_of), 2 * reps
    )

    def side(s: slice) -> ArmStats:
        assert arms.clusters is not None and arms.design_effect is not None
        return ArmStats(
            arms.n[s],
            arms.mean[s],
            arms.var[s],
            arms.conversions[s],
            arms.clusters[s],
            arms.design_effect[s],
        )

    cmp = compare_arms(side(slice(1, None, 2)), side(slice(0, None, 2)))
    covered = (cmp.value.low <= true_uplift) & (true_uplift <= cmp.value.high)
    tolerance = 4 * np.sqrt(0.95 * 0.05 / reps)
    assert abs(covered.mean() - 0.95) <= tolerance, covered.mean()
    assert (cmp.conversion.low <= 0).mean() > 0.9  # no planted conversion effect
    assert arms.design_effect is not None and arms.design_effect.mean() > 1.05  # correlated


def test_each_groups_rule_selects_exactly_the_customers_the_tree_routes_there() -> None:
    from orchestrator.measure.personas import _route
    from orchestrator.rules import Rule, column_from_values

    features, y, treated, *_ = _persona_data(20_000, seed=5, planted=True)
    tree = grow_uplift_tree(features, y, treated, seed=1, min_leaf=300, max_depth=3)
    assert len(tree.leaves) >= 3
    fields = {
        "country": ("country", "string"),
        "monetary": ("monetary", "number"),
        "age": ("age", "number"),
        "channel": ("channel", "string"),
    }
    schema = {field: kind for field, kind in fields.values()}
    f = {x.name: x for x in features}
    columns = {
        "country": column_from_values(
            "string", [f["country"].labels[c] for c in f["country"].values]
        ),
        "channel": column_from_values(
            "string", [f["channel"].labels[c] for c in f["channel"].values]
        ),
        "monetary": column_from_values("number", f["monetary"].values.tolist()),
        "age": column_from_values(
            "number", [None if np.isnan(a) else a for a in f["age"].values.tolist()]
        ),
    }
    rows = np.arange(len(y))
    leaf_of = _route(tree.nodes, tree.binned, rows)
    covered = np.zeros(len(y), dtype=int)
    for leaf in tree.leaves:
        selected = Rule.compile(tree.rule(leaf, fields), schema).evaluate(columns, len(y))
        assert np.array_equal(selected, leaf_of == leaf.id), tree.rule(leaf, fields)
        covered += selected
    assert (covered == 1).all()  # the groups' rules partition the customers


def test_a_split_with_a_hole_in_its_bins_is_written_as_several_ranges() -> None:
    """A bin nobody at a node has goes to the right side, so the right side's bins can have a
    hole: its rule must be two ranges, not one that takes in the left side's customers."""
    from orchestrator.measure.personas import _binned
    from orchestrator.rules import Rule, column_from_values

    b = np.array([0.5, 1.5, 2.5, 0.7, 2.9])
    feature = Feature("b", "number", b)
    binned = _binned(feature, np.searchsorted([1.0, 2.0], b, side="left"), 4, np.array([1.0, 2.0]))
    allowed = np.array([True, False, True, False])  # bins (-inf, 1] and (2, inf), no unknown
    rule = binned.rule(allowed, "b", "number")
    assert rule == "(b <= 1) or (b > 2)"
    selected = Rule.compile(rule, {"b": "number"}).evaluate(
        {"b": column_from_values("number", b.tolist())}, len(b)
    )
    assert selected.tolist() == [True, False, True, True, True]
