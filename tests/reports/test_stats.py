"""The uplift statistics against scipy reference computations on fixed data, and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from orchestrator.measure.uplift import (
    ArmStats,
    benjamini_hochberg,
    compare_arms,
    fieller_ratio,
    group_moments,
    newcombe_diff,
    welch_diff,
    wilson_interval,
)

RNG = np.random.default_rng(20261123)
SAMPLES = [
    (RNG.gamma(0.5, 40.0, 300), RNG.gamma(0.5, 32.0, 120)),
    (RNG.normal(10.0, 2.0, 50), RNG.normal(9.0, 3.0, 40)),
    (np.r_[np.zeros(90), RNG.exponential(50.0, 10)], np.r_[np.zeros(95), RNG.exponential(50.0, 5)]),
    (np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.7, 0.9])),
]


def _summary(x: np.ndarray) -> tuple[int, float, float]:
    return len(x), float(x.mean()), float(x.var(ddof=1))


@pytest.mark.parametrize(("x1", "x0"), SAMPLES)
def test_welch_matches_scipy(x1: np.ndarray, x0: np.ndarray) -> None:
    ref = stats.ttest_ind(x1, x0, equal_var=False)
    ci = ref.confidence_interval(0.95)
    d = welch_diff(*_summary(x1), *_summary(x0))
    assert d.estimate[0] == pytest.approx(x1.mean() - x0.mean(), rel=1e-12)
    assert d.p_value[0] == pytest.approx(ref.pvalue, rel=1e-9)
    assert d.low[0] == pytest.approx(ci.low, rel=1e-9)
    assert d.high[0] == pytest.approx(ci.high, rel=1e-9)
    ci90 = ref.confidence_interval(0.90)
    d90 = welch_diff(*_summary(x1), *_summary(x0), alpha=0.10)
    assert (d90.low[0], d90.high[0]) == pytest.approx((ci90.low, ci90.high), rel=1e-9)


def test_welch_is_vectorized_and_undefined_when_it_should_be() -> None:
    rows = [(*_summary(a), *_summary(b)) for a, b in SAMPLES]
    arr = [np.array(col) for col in zip(*rows, strict=True)]
    many = welch_diff(*arr)
    for i, row in enumerate(rows):
        one = welch_diff(*row)
        assert many.p_value[i] == pytest.approx(one.p_value[0])
    degenerate = welch_diff(
        [1, 10, 10],
        [5.0, 5.0, 5.0],
        [np.nan, 0.0, 0.0],
        [10, 1, 10],
        [4.0, 4.0, 4.0],
        [1.0, np.nan, 0.0],
    )
    assert np.isnan(degenerate.p_value).all() and np.isnan(degenerate.low).all()
    assert degenerate.estimate.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (10, 10), (1, 1000), (456, 1000)])
def test_wilson_matches_scipy(x: int, n: int) -> None:
    ref = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(x, n)
    assert low[0] == pytest.approx(ref.low, abs=1e-12)
    assert high[0] == pytest.approx(ref.high, abs=1e-12)


# Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
NEWCOMBE_TABLE = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_TABLE)
def test_newcombe_matches_the_published_table(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    d = newcombe_diff(*counts)
    assert (round(float(d.low[0]), 4), round(float(d.high[0]), 4)) == expected


@pytest.mark.parametrize(("counts", "_"), NEWCOMBE_TABLE)
def test_newcombe_p_value_is_the_chi_squared_test(counts: tuple[int, ...], _: object) -> None:
    x1, n1, x0, n0 = counts
    d = newcombe_diff(x1, n1, x0, n0)
    table = np.array([[x1, n1 - x1], [x0, n0 - x0]])
    if (table.sum(axis=0) == 0).any():
        assert d.p_value[0] == 1.0
        return
    ref = stats.chi2_contingency(table, correction=False)
    assert d.p_value[0] == pytest.approx(ref.pvalue, rel=1e-9)


def test_fieller_bounds_solve_the_defining_equation() -> None:
    z = stats.norm.ppf(0.975)
    a, sa, b, sb = 12.0, 0.8, 10.0, 0.6
    ratio, low, high = fieller_ratio(a, sa, b, sb)
    assert ratio[0] == pytest.approx(1.2)
    for r in (low[0], high[0]):
        assert abs(a - r * b) == pytest.approx(z * np.sqrt(sa**2 + r**2 * sb**2), rel=1e-9)
    grid = np.linspace(0.5, 2.0, 20001)
    inside = np.abs(a - grid * b) <= z * np.sqrt(sa**2 + grid**2 * sb**2)
    assert grid[inside].min() == pytest.approx(low[0], abs=1e-4)
    assert grid[inside].max() == pytest.approx(high[0], abs=1e-4)
    _, lo, hi = fieller_ratio(5.0, 1.0, 0.5, 1.0)  # control mean not away from zero
    assert np.isnan(lo[0]) and np.isnan(hi[0])


def test_benjamini_hochberg_matches_scipy() -> None:
    p = RNG.random(40) ** 3
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))
    with_nan = np.r_[p[:5], np.nan]
    q = benjamini_hochberg(with_nan)
    assert np.isnan(q[-1])
    assert q[:5] == pytest.approx(stats.false_discovery_control(p[:5], method="bh"))


def test_group_moments_match_numpy() -> None:
    values = RNG.gamma(0.7, 30.0, 1000) + 1e6  # a large offset: no cancellation
    groups = RNG.integers(0, 7, 1000)
    n, mean, var = group_moments(values, groups, 8)
    for g in range(7):
        sel = values[groups == g]
        assert n[g] == len(sel)
        assert mean[g] == pytest.approx(sel.mean(), rel=1e-12)
        assert var[g] == pytest.approx(sel.var(ddof=1), rel=1e-7)
    assert n[7] == 0 and np.isnan(mean[7])


def _arms(n1: list[int], n0: list[int], conv1: list[int], conv0: list[int]) -> tuple:
    k = len(n1)
    test = ArmStats(np.array(n1), np.full(k, 5.0), np.full(k, 4.0), np.array(conv1))
    control = ArmStats(np.array(n0), np.full(k, 4.0), np.full(k, 4.0), np.array(conv0))
    return test, control


def test_small_rows_are_marked_not_hidden() -> None:
    test, control = _arms([100, 29, 100, 100], [100, 100, 0, 100], [5, 5, 5, 0], [5, 5, 0, 0])
    cmp = compare_arms(test, control)
    assert cmp.status.tolist() == ["ok", "too_small", "no_control", "no_conversions"]
    assert "fewer than 30 customers in test (29)" in cmp.reason[1]
    assert np.isfinite(cmp.value.low[0]) and np.isnan(cmp.value.low[1:]).all()
    assert cmp.value.estimate[1] == pytest.approx(1.0)  # the point estimate stays
    assert np.isfinite(cmp.q_value[0]) and np.isnan(cmp.q_value[1:]).all()
    assert cmp.incremental.estimate[0] == pytest.approx(100.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=30),
    st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=30),
)
def test_intervals_hold_their_estimate(x1: list[float], x0: list[float]) -> None:
    a, b = np.array(x1), np.array(x0)
    d = welch_diff(*_summary(a), *_summary(b))
    if np.isfinite(d.low[0]):
        assert d.low[0] <= d.estimate[0] <= d.high[0]
        assert 0.0 <= d.p_value[0] <= 1.0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500), st.integers(1, 500), st.data())
def test_newcombe_interval_holds_its_estimate(n1: int, n0: int, data: st.DataObject) -> None:
    x1 = data.draw(st.integers(0, n1))
    x0 = data.draw(st.integers(0, n0))
    d = newcombe_diff(x1, n1, x0, n0)
    assert -1.0 <= d.low[0] <= d.estimate[0] <= d.high[0] <= 1.0
    assert 0.0 <= d.p_value[0] <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_q_values_are_at_least_the_p_values_and_keep_their_order(p: list[float]) -> None:
    arr = np.array(p)
    q = benjamini_hochberg(arr)
    assert (q >= arr - 1e-15).all() and (q <= 1).all()
    order = np.argsort(arr, kind="stable")
    assert (np.diff(q[order]) >= -1e-15).all()


def test_the_heat_map_paints_only_significant_cells_in_full_colour() -> None:
    from types import SimpleNamespace

    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    from orchestrator.reports.plots import heat_colours

    grid = np.array([[5.0, 5.0, np.nan]])
    cells = {
        (0, 0): SimpleNamespace(status="ok", q_value=0.01),
        (0, 1): SimpleNamespace(status="ok", q_value=0.18),
        (0, 2): SimpleNamespace(status="too small", q_value=float("nan")),
    }
    rgba = heat_colours(grid, cells, colormaps["RdYlGn"], TwoSlopeNorm(0.0, -5.0, 5.0))  # type: ignore[arg-type]
    significant, pale, grey = rgba[0, 0, :3], rgba[0, 1, :3], rgba[0, 2, :3]
    assert pale.min() > significant.min() + 0.3  # much nearer to white
    assert np.allclose(grey, 0.93)
