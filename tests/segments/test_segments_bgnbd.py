"""BG/NBD: the likelihood against the paper's equation, the fit against known parameters, and the
conditional predictions against direct integration and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from orchestrator.segments import bgnbd
from orchestrator.segments.bgnbd import BgNbdParams

CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # the paper's estimates (weeks)
SHOP = BgNbdParams(r=0.8, alpha=40.0, a=1.2, b=4.0)  # a daily-unit shop, a > 1


def paper_likelihood(p: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """Equation 6 of Fader, Hardie & Lee (2005), term by term, without logarithms."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    first = (
        special.beta(a, b + x)
        / special.beta(a, b)
        * math.gamma(r + x)
        * alpha**r
        / (math.gamma(r) * (alpha + T) ** (r + x))
    )
    second = 0.0
    if x > 0:
        second = (
            special.beta(a + 1, b + x - 1)
            / special.beta(a, b)
            * math.gamma(r + x)
            * alpha**r
            / (math.gamma(r) * (alpha + t_x) ** (r + x))
        )
    return first + second


@pytest.mark.parametrize("params", [CDNOW, SHOP, BgNbdParams(2.0, 10.0, 0.5, 0.7)])
def test_log_likelihood_matches_the_papers_equation(params: BgNbdParams) -> None:
    cases = [(0, 0.0, 38.86), (1, 30.43, 38.86), (2, 1.71, 38.86), (5, 29.0, 35.0), (0, 0.0, 0.0)]
    x = np.array([c[0] for c in cases], dtype=float)
    t_x = np.array([c[1] for c in cases])
    T = np.array([c[2] for c in cases])
    got = bgnbd.log_likelihood_terms(params, x, t_x, T)
    want = [math.log(paper_likelihood(params, int(c[0]), c[1], c[2])) for c in cases]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # x == 0 observed for no time at all carries no information.
    assert got[-1] == pytest.approx(0.0, abs=1e-12)


def test_objective_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    T = rng.integers(0, 200, size=3_000).astype(float)
    x, t_x = bgnbd.simulate(SHOP, T, rng)
    data = bgnbd._Data.build(x, np.floor(t_x), T)
    for theta in (np.log([0.5, 20.0, 1.0, 2.0]), np.log(SHOP.as_array()), np.zeros(4)):
        value, grad = bgnbd._objective(theta, data)
        numeric = optimize.approx_fprime(theta, lambda th: bgnbd._objective(th, data)[0], 1e-7)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)
        direct = -bgnbd.log_likelihood(BgNbdParams(*np.exp(theta)), x, np.floor(t_x), T)
        assert value * len(x) == pytest.approx(direct, rel=1e-10)


def test_compress_keeps_every_customer() -> None:
    x = np.array([0, 1, 0, 1, 0.0])
    t_x = np.array([0, 3, 0, 3, 0.0])
    T = np.array([5, 9, 5, 9, 7.0])
    ux, ut, uT, counts, inverse = bgnbd.compress(x, t_x, T)
    assert counts.sum() == 5 and len(ux) == 3
    np.testing.assert_array_equal(ux[inverse], x)
    np.testing.assert_array_equal(ut[inverse], t_x)
    np.testing.assert_array_equal(uT[inverse], T)


@pytest.mark.parametrize(
    ("params", "low", "high"),
    [(CDNOW, 27.0, 39.0), (SHOP, 0.0, 730.0)],
    ids=["cdnow-weeks", "shop-days"],
)
def test_fit_recovers_the_generating_parameters(
    params: BgNbdParams, low: float, high: float
) -> None:
    rng = np.random.default_rng(2005)
    T = rng.uniform(low, high, size=20_000)
    x, t_x = bgnbd.simulate(params, T, rng)
    fit = bgnbd.fit(x, t_x, T)
    assert fit.converged, fit.message
    # Tolerance from the sample itself: 4.5 asymptotic standard errors of each log-parameter.
    se = bgnbd.log_standard_errors(fit.params, x, t_x, T)
    z = (np.log(fit.params.as_array()) - np.log(params.as_array())) / se
    assert np.all(np.abs(z) < 4.5), (fit.params, z)
    assert np.all(se < 0.2)
    # The fitted model is at least as likely as the truth on its own data.
    assert fit.log_likelihood >= bgnbd.log_likelihood(params, x, t_x, T) - 1e-6


def test_fit_refuses_data_without_repeat_purchases() -> None:
    with pytest.raises(ValueError, match="repeat purchase"):
        bgnbd.fit(np.zeros(5), np.zeros(5), np.full(5, 10.0))


def test_p_alive_is_one_exactly_without_repeat_purchases() -> None:
    x = np.array([0, 0, 0, 1, 3, 3, 3.0])
    t_x = np.array([0, 0, 0, 10, 10, 10, 10.0])
    T = np.array([0, 50, 5000, 40, 20, 40, 80.0])
    alive = bgnbd.p_alive(SHOP, x, t_x, T)
    assert np.all(alive[:3] == 1.0)  # the model says so: no dropout before a repeat purchase
    assert np.all((alive[3:] > 0) & (alive[3:] < 1))
    assert alive[4] > alive[5] > alive[6]  # the longer the silence, the less likely alive


def _expected_by_integration(p: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T] from the model's definition, not the paper's closed form.

    Given (lambda, q), a customer alive at T makes (1 - exp(-lambda q t)) / q purchases in
    (T, T + t]. The integral over lambda ~ Gamma(r, alpha) is elementary; the one over
    q ~ Beta(a, b) is done numerically.
    """
    r, alpha, a, b = p.r, p.alpha, p.a, p.b

    def gamma_moment(s: float) -> float:  # E[lambda^x exp(-lambda s)] up to a constant
        return (alpha + s) ** -(r + x)

    def numerator(q: float) -> float:
        gain = gamma_moment(T) - gamma_moment(T + q * t)
        return (1 - q) ** x * gain / q * stats.beta.pdf(q, a, b)

    def denominator(q: float) -> float:
        alive = (1 - q) ** x * gamma_moment(T)
        dead = q * (1 - q) ** (x - 1) * gamma_moment(t_x) if x > 0 else 0.0
        return (alive + dead) * stats.beta.pdf(q, a, b)

    opts = {"epsabs": 0.0, "epsrel": 1e-11, "limit": 200}
    return integrate.quad(numerator, 0, 1, **opts)[0] / integrate.quad(denominator, 0, 1, **opts)[0]


@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [(CDNOW, 0, 0.0, 30.0), (CDNOW, 2, 20.0, 38.0), (SHOP, 5, 300.0, 350.0)],
)
def test_expected_purchases_match_direct_integration(
    params: BgNbdParams, x: int, t_x: float, T: float
) -> None:
    got = bgnbd.expected_purchases(params, 39.0, np.array([x]), np.array([t_x]), np.array([T]))
    assert got[0] == pytest.approx(_expected_by_integration(params, 39.0, x, t_x, T), rel=1e-6)


def test_a_new_customer_expects_the_unconditional_mean() -> None:
    zero = np.zeros(1)
    for t in (1.0, 30.0, 365.0):
        got = bgnbd.expected_purchases(SHOP, t, zero, zero, zero)[0]
        assert got == pytest.approx(float(bgnbd.expected_repeat_purchases(SHOP, t)), rel=1e-10)


def _simulate_with_holdout(
    p: BgNbdParams, T: np.ndarray, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full BG/NBD histories: x and t_x in (0, T], and purchases in (T, T + horizon]."""
    n = len(T)
    lam = rng.gamma(p.r, 1 / p.alpha, size=n)
    drop = rng.beta(p.a, p.b, size=n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        now, alive = 0.0, True
        while alive:
            now += rng.exponential(1 / lam[i])
            if now > T[i] + horizon:
                break
            if now <= T[i]:
                x[i] += 1
                t_x[i] = now
            else:
                future[i] += 1
            alive = rng.random() >= drop[i]
    return x, t_x, future


def test_expected_purchases_add_up_to_what_customers_then_do() -> None:
    rng = np.random.default_rng(7)
    n, horizon = 4_000, 52.0
    T = rng.uniform(20, 60, size=n)
    x, t_x, future = _simulate_with_holdout(CDNOW, T, horizon, rng)
    expected = bgnbd.expected_purchases(CDNOW, horizon, x, t_x, T)
    # Law of total expectation; the tolerance is 4 standard errors of the observed total.
    tolerance = 4 * future.std() * math.sqrt(n)
    assert abs(expected.sum() - future.sum()) < tolerance
    # Grouped by what was seen, too: the model ranks customers correctly.
    for group in (x == 0, (x > 0) & (x <= 2), x > 2):
        k = int(group.sum())
        assert (
            abs(expected[group].sum() - future[group].sum())
            < 4 * future[group].std() * math.sqrt(k) + 1
        )


def test_frequency_buckets_match_data_drawn_from_the_model() -> None:
    rng = np.random.default_rng(11)
    T = rng.uniform(10, 80, size=10_000)
    x, _ = bgnbd.simulate(CDNOW, T, rng)
    observed, expected = bgnbd.frequency_buckets(CDNOW, x, T, k_max=7)
    assert observed.sum() == len(x) and expected.sum() == pytest.approx(len(x))
    assert np.all(np.abs(observed - expected) < 4.5 * np.sqrt(expected) + 1)


def test_repeat_count_probabilities_sum_to_one() -> None:
    probs = bgnbd.repeat_count_probabilities(CDNOW, np.array([0.0, 1.0, 39.0, 78.0]), 400)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert probs[0, 0] == 1.0


def test_the_time_unit_does_not_change_the_predictions() -> None:
    rng = np.random.default_rng(5)
    T = rng.integers(1, 700, size=5_000).astype(float)
    x, t_x = bgnbd.simulate(SHOP, T, rng)
    t_x = np.floor(t_x)
    days = bgnbd.fit(x, t_x, T)
    weeks = bgnbd.fit(x, t_x / 7, T / 7)
    assert weeks.params.alpha == pytest.approx(days.params.alpha / 7, rel=1e-3)
    assert weeks.params.r == pytest.approx(days.params.r, rel=1e-3)
    np.testing.assert_allclose(
        bgnbd.p_alive(days.params, x, t_x, T),
        bgnbd.p_alive(weeks.params, x, t_x / 7, T / 7),
        atol=1e-3,
    )
    np.testing.assert_allclose(
        bgnbd.expected_purchases(days.params, 90, x, t_x, T),
        bgnbd.expected_purchases(weeks.params, 90 / 7, x, t_x / 7, T / 7),
        rtol=2e-3,
        atol=1e-4,
    )


def test_p_purchase_within_matches_what_simulated_customers_then_do() -> None:
    # Monte Carlo of the model itself: histories up to T, then whether anything was bought in
    # the next 7 and 30 days, against the predicted probability, overall and by what was seen.
    rng = np.random.default_rng(5)
    n, unit = 6_000, 7.0  # CDNOW is in weeks
    T = rng.uniform(20, 60, size=n)
    for days in (7.0, 30.0):
        x, t_x, future = _simulate_with_holdout(CDNOW, T, days / unit, rng)
        p = bgnbd.p_purchase_within(CDNOW, days / unit, x, t_x, T)
        assert np.all((p >= 0) & (p <= 1))
        bought = future > 0
        for group in (np.ones(n, bool), x == 0, (x > 0) & (x <= 2), x > 2):
            k = int(group.sum())
            # 4 binomial standard errors of the observed share.
            tolerance = 4 * math.sqrt(max(p[group].mean() * (1 - p[group].mean()), 1e-4) / k)
            assert abs(p[group].mean() - bought[group].mean()) < tolerance, (days, k)


def test_p_purchase_within_grows_with_the_window_and_is_capped_by_p_alive() -> None:
    x = np.array([0.0, 1.0, 4.0, 10.0])
    t_x = np.array([0.0, 5.0, 30.0, 10.0])
    T = np.full(4, 40.0)
    week = bgnbd.p_purchase_within(SHOP, 7.0, x, t_x, T)
    month = bgnbd.p_purchase_within(SHOP, 30.0, x, t_x, T)
    forever = bgnbd.p_purchase_within(SHOP, 1e9, x, t_x, T)
    assert np.all(week < month)
    np.testing.assert_allclose(forever, bgnbd.p_alive(SHOP, x, t_x, T), atol=1e-5)


def test_median_time_to_next_is_the_median_of_the_posterior_wait() -> None:
    rng = np.random.default_rng(3)
    for x, T in ((0.0, 10.0), (3.0, 40.0), (12.0, 90.0)):
        lam = rng.gamma(SHOP.r + x, 1 / (SHOP.alpha + T), size=200_000)
        waits = rng.exponential(1 / lam)
        got = float(bgnbd.median_time_to_next(SHOP, np.array([x]), np.array([T]))[0])
        assert got == pytest.approx(float(np.median(waits)), rel=0.03)
