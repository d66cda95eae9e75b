"""BG/NBD: how many repeat purchases a customer will make, and whether they are still "alive".

Fader, Hardie & Lee (2005), "Counting Your Customers" the Easy Way: An Alternative to the
Pareto/NBD Model, Marketing Science 24(2). While alive, a customer buys at rate ``lambda ~
Gamma(r, alpha)`` (a Poisson process); after each repeat purchase they drop out with probability
``p ~ Beta(a, b)``. Per customer the data are ``x`` (repeat purchases), ``t_x`` (time of the last
purchase) and ``T`` (time observed), both counted from the first purchase, in one time unit.

The fit maximizes the likelihood (the paper's equation 6) over the logarithms of the parameters
with an analytic gradient, after collapsing customers with identical ``(x, t_x, T)`` into
weighted rows (purchase data in whole days have far fewer distinct rows than customers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

Array = np.ndarray


@dataclass(frozen=True)
class BgNbdParams:
    """``r``, ``alpha`` (purchase rate: Gamma shape and rate) and ``a``, ``b`` (dropout: Beta)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_array(self) -> Array:
        return np.array([self.r, self.alpha, self.a, self.b])


@dataclass(frozen=True)
class BgNbdFit:
    """The fitted parameters and how the fit went."""

    params: BgNbdParams
    log_likelihood: float
    n: int
    converged: bool
    iterations: int
    message: str


def _terms(params: BgNbdParams, x: Array, t_x: Array, T: Array) -> tuple[Array, Array, Array]:
    """``A1 + A2`` (the 'alive at T' branch, in logs), ``D`` (log odds of 'dropped out after t_x'
    against it, meaningful where ``x > 0``) and the mask ``x > 0``; each (n,)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_aT = np.log(alpha + T)
    alive = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
        - (r + x) * log_aT
    )
    repeat = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(a) - np.log(b + x - 1) + (r + x) * (log_aT - np.log(alpha + t_x))
    return alive, np.where(repeat, d, -np.inf), repeat


def log_likelihood_terms(params: BgNbdParams, x: Array, t_x: Array, T: Array) -> Array:
    """Each customer's log-likelihood (equation 6 of the paper, in logs); float64 (n,)."""
    alive, d, _ = _terms(params, x, t_x, T)
    return alive + np.logaddexp(0.0, d)


def log_likelihood(
    params: BgNbdParams, x: Array, t_x: Array, T: Array, weights: Array | None = None
) -> float:
    """The total log-likelihood of customers (n,), optionally weighted (n,)."""
    terms = log_likelihood_terms(params, x, t_x, T)
    return float(terms.sum() if weights is None else terms @ weights)


@dataclass(frozen=True)
class _Data:
    """Weighted distinct rows, each column split into its distinct values and their indices, so
    the special functions run once per distinct value rather than once per row."""

    x: Array
    t_x: Array
    T: Array
    w: Array
    total: float
    xs: Array
    x_at: Array
    txs: Array
    tx_at: Array
    Ts: Array
    T_at: Array

    @classmethod
    def build(cls, x: Array, t_x: Array, T: Array) -> _Data:
        ux, ut, uT, w, _ = compress(x, t_x, T)
        xs, x_at = np.unique(ux, return_inverse=True)
        txs, tx_at = np.unique(ut, return_inverse=True)
        Ts, T_at = np.unique(uT, return_inverse=True)
        return cls(ux, ut, uT, w, float(len(x)), xs, x_at, txs, tx_at, Ts, T_at)


def _objective(theta: Array, data: _Data) -> tuple[float, Array]:
    """Mean negative log-likelihood and its gradient in ``log(r, alpha, a, b)``."""
    r, alpha, a, b = np.exp(theta)
    x, w, xs, x_at = data.x, data.w, data.xs, data.x_at
    log_aT = np.log(alpha + data.Ts)[data.T_at]
    log_atx = np.log(alpha + data.txs)[data.tx_at]
    inv_aT = (1.0 / (alpha + data.Ts))[data.T_at]
    inv_atx = (1.0 / (alpha + data.txs))[data.tx_at]
    rx = r + x
    per_x = special.gammaln(r + xs) + special.betaln(a, b + xs)
    alive = per_x[x_at] - special.gammaln(r) + r * np.log(alpha) - special.betaln(a, b)
    alive -= rx * log_aT
    with np.errstate(divide="ignore", invalid="ignore"):
        log_b = np.where(xs > 0, np.log(b + xs - 1), 0.0)
        inv_b = np.where(xs > 0, 1.0 / (b + xs - 1), 0.0)
    d = np.where(x > 0, np.log(a) - log_b[x_at] + rx * (log_aT - log_atx), -np.inf)
    ll = alive + np.logaddexp(0.0, d)
    s = special.expit(d)  # weight of the 'dropped out after t_x' branch; 0 where x == 0
    dig_abx = special.digamma(a + b + xs)[x_at]
    d_r = special.digamma(r + xs)[x_at] - special.digamma(r) + np.log(alpha) - log_aT
    d_r += s * (log_aT - log_atx)
    d_alpha = r / alpha - rx * inv_aT + s * rx * (inv_aT - inv_atx)
    d_a = special.digamma(a + b) - dig_abx + s / a
    d_b = special.digamma(b + xs)[x_at] - dig_abx - special.digamma(b) + special.digamma(a + b)
    d_b -= s * inv_b[x_at]
    grad = np.array([d_r @ w * r, d_alpha @ w * alpha, d_a @ w * a, d_b @ w * b])
    return -float(ll @ w) / data.total, -grad / data.total


def compress(x: Array, t_x: Array, T: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Distinct ``(x, t_x, T)`` rows and how many customers share each (four arrays (k,)), and
    each customer's row index (n,)."""
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    order = np.lexsort((T, t_x, x))
    sx, st, sT = x[order], t_x[order], T[order]
    new = np.r_[True, (sx[1:] != sx[:-1]) | (st[1:] != st[:-1]) | (sT[1:] != sT[:-1])]
    inverse = np.empty(len(x), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    counts = np.diff(np.r_[first, len(x)]).astype(np.float64)
    return sx[first], st[first], sT[first], counts, inverse


def fit(
    x: Array,
    t_x: Array,
    T: Array,
    *,
    max_iterations: int = 500,
    init: BgNbdParams | None = None,
) -> BgNbdFit:
    """Fit by maximum likelihood to customers' ``x``, ``t_x``, ``T`` (each (n,), one time unit).

    Customers with ``T == 0`` (first purchase at the end of the period) carry no information and
    contribute 0 to the log-likelihood; at least one customer needs ``x > 0``.
    """
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    if len(x) == 0 or not (x > 0).any():
        raise ValueError("BG/NBD needs at least one customer with a repeat purchase")
    data = _Data.build(x, t_x, T)
    if init is None:
        # Start where the mean rate matches the data: r = 1, alpha = mean T / mean x.
        alpha0 = max(float(T.mean()) / max(float(x.mean()), 1e-3), 1e-3)
        init = BgNbdParams(1.0, alpha0, 1.0, 1.0)
    theta0 = np.log(init.as_array())
    bounds = [(-15.0, 15.0)] * 4
    from scipy import optimize  # lazy: loads in ~0.4 s, needed only to fit

    result = optimize.minimize(
        _objective,
        theta0,
        args=(data,),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8},
    )
    params = BgNbdParams(*(float(v) for v in np.exp(result.x)))
    at_bound = bool(np.any(np.abs(result.x) >= 15.0 - 1e-6))
    return BgNbdFit(
        params=params,
        log_likelihood=log_likelihood(params, data.x, data.t_x, data.T, data.w),
        n=len(x),
        converged=bool(result.success) and not at_bound,
        iterations=int(result.nit),
        message=("a parameter reached its bound; " if at_bound else "") + str(result.message),
    )


def log_standard_errors(params: BgNbdParams, x: Array, t_x: Array, T: Array) -> Array:
    """Asymptotic standard errors of ``log(r, alpha, a, b)`` at ``params`` (4,), from the
    observed information (the Hessian of the log-likelihood, by central differences of its
    analytic gradient). NaN where the Hessian is not positive definite."""
    data = _Data.build(
        np.asarray(x, dtype=np.float64),
        np.asarray(t_x, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    return _standard_errors(
        lambda th: _objective(th, data)[1], np.log(params.as_array()), data.total
    )


def _standard_errors(grad: Callable[[Array], Array], theta: Array, n: float) -> Array:
    """Standard errors from the Hessian of ``n`` times the mean negative log-likelihood."""
    k = len(theta)
    hessian = np.empty((k, k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = 1e-5
        hessian[:, j] = (grad(theta + step) - grad(theta - step)) / 2e-5
    hessian = (hessian + hessian.T) / 2 * n
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    return np.sqrt(np.diag(np.linalg.inv(hessian)))


def p_alive(params: BgNbdParams, x: Array, t_x: Array, T: Array) -> Array:
    """P(still alive at T | x, t_x, T), equation 12 of the paper; exactly 1 where ``x == 0``."""
    _, d, repeat = _terms(
        params, np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
    )
    return np.where(repeat, special.expit(-d), 1.0)


def expected_purchases(params: BgNbdParams, t: float, x: Array, t_x: Array, T: Array) -> Array:
    """Expected repeat purchases in ``(T, T + t]`` given ``x, t_x, T`` (equation 10); (n,)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = np.asarray(x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    # (alpha + T) / (alpha + T + t) = 1 - z
    bracket = 1.0 - np.exp((r + x) * np.log1p(-z)) * hyp
    return (a + b + x - 1) / (a - 1) * bracket * p_alive(params, x, t_x, T)


def p_purchase_within(params: BgNbdParams, t: float, x: Array, t_x: Array, T: Array) -> Array:
    """P(at least one purchase in ``(T, T + t]`` | x, t_x, T); (n,).

    A customer drops out only right after a purchase, so one who is alive at ``T`` makes the
    next purchase before any dropout: P(none in the window | alive) is ``E[exp(-λ t)]`` under
    λ's posterior given alive, ``Gamma(r + x, alpha + T)``, which is
    ``((alpha + T) / (alpha + T + t)) ** (r + x)``.
    """
    x = np.asarray(x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    none = np.exp((params.r + x) * np.log1p(-t / (params.alpha + T + t)))
    return p_alive(params, x, t_x, T) * (1.0 - none)


def median_time_to_next(params: BgNbdParams, x: Array, T: Array) -> Array:
    """Median time from ``T`` to the next purchase of a customer still alive at ``T``; (n,).

    The wait is exponential at rate λ ~ Gamma(r + x, alpha + T) (a Lomax law), whose median is
    ``(alpha + T) (2 ** (1 / (r + x)) - 1)``. It is always finite (the mean is not when
    ``r + x <= 1``), and it says nothing of the chance that the customer has left: that is
    ``p_alive``.
    """
    x = np.asarray(x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    return (params.alpha + T) * np.expm1(np.log(2.0) / (params.r + x))


def expected_repeat_purchases(params: BgNbdParams, t: Array | float) -> Array:
    """Expected repeat purchases in ``(0, t]`` of a new customer, E[X(t)] (equation 9)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    t = np.asarray(t, dtype=np.float64)
    z = t / (alpha + t)
    hyp = special.hyp2f1(r, b, a + b - 1, z)
    return (a + b - 1) / (a - 1) * (1.0 - np.exp(r * np.log1p(-z)) * hyp)


def repeat_count_probabilities(params: BgNbdParams, t: Array, k_max: int) -> Array:
    """P(X(t) = k) for k = 0..k_max - 1 (equation 8) at each time in ``t`` (m,); (m, k_max)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    t = np.asarray(t, dtype=np.float64)[:, None]
    k = np.arange(k_max, dtype=np.float64)[None, :]
    # Negative binomial pmf of the count while alive.
    log_nb = (
        special.gammaln(r + k)
        - special.gammaln(r)
        - special.gammaln(k + 1)
        + r * np.log(alpha / (alpha + t))
        + special.xlogy(k, t / (alpha + t))  # 0 * log(0) = 0: nothing happens in no time
    )
    nb = np.exp(log_nb)
    below = np.cumsum(nb, axis=1) - nb  # sum over j < k
    first = np.exp(special.betaln(a, b + k) - special.betaln(a, b)) * nb
    with np.errstate(invalid="ignore"):
        second = np.exp(special.betaln(a + 1, b + k - 1) - special.betaln(a, b)) * (1 - below)
    second[:, 0] = 0.0
    return first + second


def frequency_buckets(
    params: BgNbdParams, x: Array, T: Array, k_max: int = 7
) -> tuple[Array, Array]:
    """Observed and expected customer counts with 0, 1, ..., ``k_max - 1`` and ``k_max``+ repeat
    purchases, the expectation summed over each customer's own ``T``; two arrays (k_max + 1,)."""
    x = np.asarray(x)
    observed = np.bincount(np.minimum(x, k_max).astype(np.int64), minlength=k_max + 1)
    times, counts = np.unique(np.asarray(T, dtype=np.float64), return_counts=True)
    probs = repeat_count_probabilities(params, times, k_max)
    expected = counts.astype(np.float64) @ probs
    expected = np.append(expected, len(x) - expected.sum())
    return observed.astype(np.float64), expected


def simulate(params: BgNbdParams, T: Array, rng: np.random.Generator) -> tuple[Array, Array]:
    """Draw ``x`` and ``t_x`` for customers observed for ``T`` (n,) from the BG/NBD process."""
    T = np.asarray(T, dtype=np.float64)
    n = len(T)
    lam = rng.gamma(params.r, 1.0 / params.alpha, size=n)
    p = rng.beta(params.a, params.b, size=n)
    arrivals = rng.poisson(lam * T)  # purchases a never-dying customer would make in (0, T]
    death = rng.geometric(p)  # drops out right after this repeat purchase
    x = np.minimum(arrivals, death)
    # Given N arrivals in (0, T], their times are sorted uniforms: the x-th is T * Beta(x, N-x+1).
    has = x > 0
    t_x = np.zeros(n)
    t_x[has] = T[has] * rng.beta(x[has], arrivals[has] - x[has] + 1)
    return x.astype(np.float64), t_x
