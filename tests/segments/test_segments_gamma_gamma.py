"""Gamma-Gamma: the marginal likelihood against direct integration, the fit against known
parameters, and the conditional expectation against simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from orchestrator.segments import gamma_gamma
from orchestrator.segments.gamma_gamma import GammaGammaParams

CDNOW = GammaGammaParams(p=6.25, q=3.74, v=15.44)  # Fader & Hardie's estimates on CDNOW


def _density_by_integration(params: GammaGammaParams, x: float, m: float) -> float:
    """Density of the mean of x orders, integrating the customer's rate nu out numerically."""

    def integrand(nu: float) -> float:
        mean_of_x = stats.gamma.pdf(m, params.p * x, scale=1 / (nu * x))
        return mean_of_x * stats.gamma.pdf(nu, params.q, scale=1 / params.v)

    return integrate.quad(integrand, 0, np.inf, epsabs=0, epsrel=1e-11, limit=200)[0]


@pytest.mark.parametrize(("x", "m"), [(1, 35.0), (2, 12.5), (7, 80.0), (15, 41.3)])
def test_log_likelihood_matches_direct_integration(x: int, m: float) -> None:
    got = gamma_gamma.log_likelihood_terms(CDNOW, np.array([float(x)]), np.array([m]))[0]
    assert got == pytest.approx(math.log(_density_by_integration(CDNOW, x, m)), rel=1e-8)


def test_objective_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(1, 12, size=2_000).astype(float)
    m = gamma_gamma.simulate(CDNOW, x, rng)
    data = gamma_gamma._Data.build(x, m)
    for theta in (np.zeros(3), np.log([2.0, 5.0, 30.0]), np.log(CDNOW.as_array())):
        value, grad = gamma_gamma._objective(theta, data)
        numeric = optimize.approx_fprime(theta, lambda th: gamma_gamma._objective(th, data)[0])
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
        direct = -gamma_gamma.log_likelihood(GammaGammaParams(*np.exp(theta)), x, m)
        assert value * len(x) == pytest.approx(direct, rel=1e-10)


def test_fit_recovers_the_generating_parameters() -> None:
    rng = np.random.default_rng(2005)
    x = rng.integers(1, 10, size=20_000).astype(float)
    m = gamma_gamma.simulate(CDNOW, x, rng)
    fit = gamma_gamma.fit(x, m)
    assert fit.converged, fit.message
    se = gamma_gamma.log_standard_errors(fit.params, x, m)
    z = (np.log(fit.params.as_array()) - np.log(CDNOW.as_array())) / se
    assert np.all(np.abs(z) < 4.5), (fit.params, z)
    assert abs(fit.correlation) < 4.5 / math.sqrt(len(x))  # independent by construction


def test_fit_refuses_unusable_data() -> None:
    with pytest.raises(ValueError):
        gamma_gamma.fit(np.array([1.0, 0.0]), np.array([10.0, 20.0]))
    with pytest.raises(ValueError):
        gamma_gamma.fit(np.array([1.0, 2.0]), np.array([10.0, 0.0]))


def test_expected_order_value_shrinks_towards_the_population_mean() -> None:
    x = np.array([0.0, 1.0, 10.0, 1000.0])
    m = np.array([0.0, 100.0, 100.0, 100.0])
    value = gamma_gamma.expected_order_value(CDNOW, x, m)
    assert value[0] == pytest.approx(CDNOW.population_mean)
    assert CDNOW.population_mean < value[1] < value[2] < value[3] < 100.0
    assert value[3] == pytest.approx(100.0, rel=0.01)
    unbounded = GammaGammaParams(p=2.0, q=0.9, v=10.0)
    assert np.isnan(gamma_gamma.expected_order_value(unbounded, x, m)).all()


def test_expected_order_value_is_unbiased_for_the_customers_true_mean() -> None:
    rng = np.random.default_rng(9)
    n = 50_000
    x = rng.integers(1, 6, size=n).astype(float)
    nu = rng.gamma(CDNOW.q, 1 / CDNOW.v, size=n)
    m = rng.gamma(CDNOW.p * x, 1 / (nu * x))
    true_mean = CDNOW.p / nu
    error = gamma_gamma.expected_order_value(CDNOW, x, m) - true_mean
    # The posterior mean has zero average error; tolerance from the sample's own spread.
    assert abs(error.mean()) < 4 * error.std() / math.sqrt(n)
