"""Gamma-Gamma: the order value a repeat customer will spend on average.

Fader, Hardie & Lee (2005), RFM and CLV: Using Iso-Value Curves for Customer Base Analysis,
Journal of Marketing Research 42(4), and Fader & Hardie (2013), The Gamma-Gamma Model of Monetary
Value. A customer's order values are ``Gamma(p, nu)``, their mean ``p / nu`` varying across
customers through ``nu ~ Gamma(q, v)`` (shape, rate). Per customer the data are ``x`` (repeat
purchases) and ``m`` (their mean value); the model assumes ``m`` independent of ``x`` (the fit
reports their correlation so that can be checked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from orchestrator.segments.bgnbd import _standard_errors

Array = np.ndarray


@dataclass(frozen=True)
class GammaGammaParams:
    """``p`` (shape of order values), ``q`` and ``v`` (shape and rate of their rate ``nu``)."""

    p: float
    q: float
    v: float

    def as_array(self) -> Array:
        return np.array([self.p, self.q, self.v])

    @property
    def population_mean(self) -> float:
        """Mean order value across customers, ``p v / (q - 1)``; infinite when ``q <= 1``."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")


@dataclass(frozen=True)
class GammaGammaFit:
    params: GammaGammaParams
    log_likelihood: float
    n: int
    converged: bool
    iterations: int
    message: str
    correlation: float  # Pearson correlation of x and m among the fitted customers


def log_likelihood_terms(params: GammaGammaParams, x: Array, m: Array) -> Array:
    """Each customer's log density of mean value ``m`` given ``x`` repeat purchases; (n,)."""
    p, q, v = params.p, params.q, params.v
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + m * x)
    )


def log_likelihood(params: GammaGammaParams, x: Array, m: Array) -> float:
    return float(log_likelihood_terms(params, x, m).sum())


@dataclass(frozen=True)
class _Data:
    """The data with their logarithms, and ``x`` split into distinct values and indices so the
    special functions run once per distinct ``x`` rather than once per customer."""

    x: Array
    m: Array
    log_m: Array
    x_log_x: Array
    xs: Array
    x_at: Array

    @classmethod
    def build(cls, x: Array, m: Array) -> _Data:
        x = np.asarray(x, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        xs, x_at = np.unique(x, return_inverse=True)
        return cls(x, m, np.log(m), x * np.log(x), xs, x_at.ravel())


def _objective(theta: Array, data: _Data) -> tuple[float, Array]:
    """Mean negative log-likelihood and its gradient in ``log(p, q, v)``."""
    p, q, v = np.exp(theta)
    x, m, at = data.x, data.m, data.x_at
    n = float(len(x))
    pxs = p * data.xs
    px = p * x
    vmx = v + m * x
    log_vmx = np.log(vmx)
    per_x = special.gammaln(pxs + q) - special.gammaln(pxs)
    ll = per_x[at] - special.gammaln(q) + q * np.log(v)
    ll += (px - 1) * data.log_m + p * data.x_log_x - (px + q) * log_vmx
    dig = special.digamma(pxs + q)
    d_p = x * ((dig - special.digamma(pxs))[at] + data.log_m - log_vmx) + data.x_log_x
    d_q = dig[at] - special.digamma(q) + np.log(v) - log_vmx
    d_v = q / v - (px + q) / vmx
    grad = np.array([d_p.sum() * p, d_q.sum() * q, d_v.sum() * v])
    return -float(ll.sum()) / n, -grad / n


def fit(x: Array, m: Array, *, max_iterations: int = 500) -> GammaGammaFit:
    """Fit to repeat customers: ``x`` (n,) > 0 repeat purchases with mean value ``m`` (n,) > 0."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    if len(x) < 2 or (x <= 0).any() or (m <= 0).any():
        raise ValueError("Gamma-Gamma needs two or more customers with x > 0 and m > 0")
    # Method-of-moments-like start: order values with shape 1 and the observed mean.
    theta0 = np.log([1.0, 2.0, float(np.mean(m))])
    from scipy import optimize  # lazy: loads in ~0.4 s, needed only to fit

    result = optimize.minimize(
        _objective,
        theta0,
        args=(_Data.build(x, m),),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-15.0, 15.0)] * 3,
        options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8},
    )
    params = GammaGammaParams(*(float(v) for v in np.exp(result.x)))
    at_bound = bool(np.any(np.abs(result.x) >= 15.0 - 1e-6))
    corr = float(np.corrcoef(x, m)[0, 1]) if np.std(x) > 0 and np.std(m) > 0 else 0.0
    return GammaGammaFit(
        params=params,
        log_likelihood=log_likelihood(params, x, m),
        n=len(x),
        converged=bool(result.success) and not at_bound,
        iterations=int(result.nit),
        message=("a parameter reached its bound; " if at_bound else "") + str(result.message),
        correlation=corr,
    )


def log_standard_errors(params: GammaGammaParams, x: Array, m: Array) -> Array:
    """Asymptotic standard errors of ``log(p, q, v)`` at ``params`` (3,), from the observed
    information; NaN where the Hessian is not positive definite."""
    data = _Data.build(x, m)
    return _standard_errors(
        lambda th: _objective(th, data)[1], np.log(params.as_array()), float(len(data.x))
    )


def expected_order_value(params: GammaGammaParams, x: Array, m: Array) -> Array:
    """E(order value | x, m): ``(v + x m) p / (p x + q - 1)``; the population mean where ``x = 0``.

    NaN everywhere when ``q <= 1`` (the population mean does not exist). Shape (n,).

    >>> expected_order_value(GammaGammaParams(6.0, 4.0, 15.0), np.array([0.0, 2.0]),
    ...                      np.array([0.0, 40.0])).round(2).tolist()
    [30.0, 38.0]
    """
    p, q, v = params.p, params.q, params.v
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    if q <= 1:
        return np.full(len(x), np.nan)
    return (v + x * m) * p / (p * x + q - 1)


def simulate(params: GammaGammaParams, x: Array, rng: np.random.Generator) -> Array:
    """Draw the mean value of ``x`` (n,) > 0 orders per customer from the model; (n,)."""
    x = np.asarray(x, dtype=np.float64)
    nu = rng.gamma(params.q, 1.0 / params.v, size=len(x))
    # The mean of x Gamma(p, nu) draws is Gamma(p x, nu x).
    return rng.gamma(params.p * x, 1.0 / (nu * x))
