"""Uplift statistics: differences between a test and a control arm, with intervals (pure numpy).

Every function is vectorized over ``k`` comparisons (rows of a report): arguments are scalars or
arrays of shape ``(k,)`` and results have shape ``(k,)``. Nothing here reads a database.

- :func:`welch_diff`: difference of means, Welch's t interval and p-value (unequal variances).
- :func:`wilson_interval` and :func:`newcombe_diff`: a proportion's Wilson score interval, and
  Newcombe's hybrid score interval for a difference of proportions (method 10 of Newcombe 1998),
  with the pooled two-proportion z-test p-value.
- :func:`fieller_ratio`: Fieller's interval for a ratio of means (relative uplift), unbounded
  (NaN) when the control mean is not clearly away from zero.
- :func:`benjamini_hochberg`: false-discovery-rate adjusted p-values for many comparisons.
- :func:`compare_arms`: all of the above for report rows, with the small-sample rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_PER_ARM = 30
"""Fewer customers than this in either arm: the row is marked too small to say anything."""

STATUS_OK = "ok"
STATUS_SMALL = "too_small"
STATUS_NO_CONTROL = "no_control"
STATUS_NO_CONVERSIONS = "no_conversions"


@dataclass(frozen=True)
class Diff:
    """Estimates of a difference (test minus control), each ``(k,)``; NaN where undefined."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    se: np.ndarray
    p_value: np.ndarray


def _arr(x: object) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def group_moments(
    values: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample variance (ddof 1) of ``values (m,)`` per group code ``(m,)``.

    Two passes (means, then squared deviations), so large sums do not cancel. Empty groups get
    NaN means; groups of one get NaN variances.

    >>> n, mean, var = group_moments(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 2)
    >>> n.tolist(), mean.tolist(), var[:1].tolist()
    ([2, 1], [2.0, 5.0], [2.0])
    """
    groups = np.asarray(groups, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    n = np.bincount(groups, minlength=n_groups)[:n_groups]
    total = np.bincount(groups, weights=values, minlength=n_groups)[:n_groups]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        dev = values - mean[groups]
        ss = np.bincount(groups, weights=dev * dev, minlength=n_groups)[:n_groups]
        var = np.where(n > 1, ss / np.maximum(n - 1, 1), np.nan)
    return n, mean, var


def cluster_moments(
    sums: np.ndarray,
    counts: np.ndarray,
    conversions: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
) -> ArmStats:
    """Per group, the mean value per unit when units come in clusters (a customer's decisions).

    Each of the ``c`` clusters has ``sums (c,)`` (value), ``counts (c,)`` (units) and
    ``conversions (c,)`` (converted units), and belongs to ``groups (c,)``. Per group: units
    ``N``, clusters ``K``, mean ``ΣS / N``, and the cluster-robust (sandwich) variance of that
    mean ``K / (K - 1) · Σ (S - mean · n)² / N²``, returned as ``var = N · Var(mean)``. The
    conversion rate's design effect is ``Σ (c - p n)² / (p (1 - p) N)``, at least 1. With one
    unit per cluster these are the ordinary sample variance and a design effect of 1.

    >>> arm = cluster_moments(np.array([3.0, 5.0]), np.array([1, 1]), np.array([1, 0]),
    ...                       np.array([0, 0]), 1)
    >>> arm.n.tolist(), arm.mean.tolist(), arm.var.tolist(), arm.design_effect.tolist()
    ([2], [4.0], [2.0], [1.0])
    """
    groups = np.asarray(groups, dtype=np.int64)
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    conv = np.asarray(conversions, dtype=np.float64)

    def per(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(groups, weights=weights, minlength=n_groups)[:n_groups]

    k = per(None)
    n = per(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = per(sums) / n
        resid = sums - mean[groups] * counts
        var_mean = k / (k - 1) * per(resid * resid) / (n * n)
        rate = per(conv) / n
        dev = conv - rate[groups] * counts
        binomial = rate * (1 - rate) * n
        deff = np.where(binomial > 0, per(dev * dev) / binomial, 1.0)
    return ArmStats(
        n=np.rint(n).astype(np.int64),
        mean=mean,
        var=np.where(k > 1, var_mean * n, np.nan),
        conversions=np.rint(per(conv)).astype(np.int64),
        clusters=k,
        design_effect=np.maximum(np.nan_to_num(deff, nan=1.0), 1.0),
    )


def welch_diff(
    n1: object,
    mean1: object,
    var1: object,
    n0: object,
    mean0: object,
    var0: object,
    *,
    alpha: float = 0.05,
    k1: object = None,
    k0: object = None,
) -> Diff:
    """Difference of means ``mean1 - mean0`` with Welch's t interval and two-sided p-value.

    Same numbers as ``scipy.stats.ttest_ind(x1, x0, equal_var=False)`` from the summaries.
    Undefined (NaN) when an arm has fewer than two observations or both variances are zero.
    ``var / n`` is the variance of the mean; ``k1``/``k0`` (default ``n``) are the independent
    units behind it (customers, for clustered means), which set the degrees of freedom.

    >>> d = welch_diff(50, 10.0, 4.0, 40, 9.0, 9.0)
    >>> round(float(d.estimate[0]), 3), round(float(d.p_value[0]), 4)
    (1.0, 0.0748)
    """
    n1, m1, v1, n0, m0, v0 = map(_arr, (n1, mean1, var1, n0, mean0, var0))
    c1 = n1 if k1 is None else _arr(k1)
    c0 = n0 if k0 is None else _arr(k0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v0 / n0
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (c1 - 1) + b * b / (c0 - 1))
        est = m1 - m0
        defined = (c1 >= 2) & (c0 >= 2) & (se > 0) & np.isfinite(se)
        se = np.where(defined, se, np.nan)
        df = np.where(defined, df, np.nan)
        t = est / se
        p = 2.0 * stats.t.sf(np.abs(t), df)
        half = stats.t.ppf(1.0 - alpha / 2.0, df) * se
    return Diff(est, est - half, est + half, se, p)


def wilson_interval(x: object, n: object, *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion ``x / n`` (no continuity correction).

    >>> lo, hi = wilson_interval(0, 10)
    >>> float(lo[0]), round(float(hi[0]), 4)
    (0.0, 0.2775)
    """
    x, n = _arr(x), _arr(n)
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        denom = 1.0 + z * z / n
        center = (p + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def newcombe_diff(x1: object, n1: object, x0: object, n0: object, *, alpha: float = 0.05) -> Diff:
    """Difference of proportions ``x1/n1 - x0/n0``: Newcombe's hybrid score interval.

    The p-value is the pooled two-proportion z-test's (equal to Pearson's chi-squared test of the
    2x2 table without continuity correction); 1 when nobody, or everybody, converted.

    >>> d = newcombe_diff(56, 70, 48, 80)
    >>> [round(float(v[0]), 4) for v in (d.estimate, d.low, d.high)]
    [0.2, 0.0524, 0.3339]
    """
    x1, n1, x0, n0 = map(_arr, (x1, n1, x0, n0))
    l1, u1 = wilson_interval(x1, n1, alpha=alpha)
    l0, u0 = wilson_interval(x0, n0, alpha=alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p0 = x1 / n1, x0 / n0
        est = p1 - p0
        low = np.maximum(est - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), -1.0)
        high = np.minimum(est + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2), 1.0)
        pooled = (x1 + x0) / (n1 + n0)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0))
        degenerate = (pooled <= 0) | (pooled >= 1)
        z = np.where(degenerate, 0.0, est / np.where(degenerate, 1.0, se))
        p = np.where(np.isfinite(pooled), 2.0 * stats.norm.sf(np.abs(z)), np.nan)
        se_unpooled = np.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return Diff(est, low, high, se_unpooled, p)


def fieller_ratio(
    mean1: object,
    se1: object,
    mean0: object,
    se0: object,
    *,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio ``mean1 / mean0`` of independent means and Fieller's interval: (ratio, low, high).

    The interval is the set of ratios ``r`` with ``|mean1 - r mean0| <= z sqrt(se1² + r² se0²)``.
    It is bounded only when ``mean0`` is clearly away from zero (``mean0² > z² se0²``); otherwise
    low and high are NaN: the data cannot bound the relative change.

    >>> r, lo, hi = fieller_ratio(12.0, 0.5, 10.0, 0.5)
    >>> round(float(r[0]), 3), round(float(lo[0]), 3), round(float(hi[0]), 3)
    (1.2, 1.057, 1.366)
    """
    a, sa, b, sb = map(_arr, (mean1, se1, mean0, se0))
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    va, vb = sa * sa, sb * sb
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = a / b
        quad = b * b - z * z * vb
        disc = z * z * (va * quad + a * a * vb)
        bounded = (quad > 0) & np.isfinite(disc)
        root = np.sqrt(np.where(bounded, disc, 0.0))
        q = np.where(bounded, quad, 1.0)
        r1, r2 = (a * b - root) / q, (a * b + root) / q
    low = np.where(bounded, np.minimum(r1, r2), np.nan)
    high = np.where(bounded, np.maximum(r1, r2), np.nan)
    return ratio, low, high


def benjamini_hochberg(p_values: object) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaNs stay NaN and are not counted.

    Same as ``scipy.stats.false_discovery_control(p, method="bh")`` on the finite values.

    >>> benjamini_hochberg([0.01, 0.04, np.nan, 0.03]).round(3).tolist()
    [0.03, 0.04, nan, 0.04]
    """
    p = _arr(p_values)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass(frozen=True)
class ArmStats:
    """One arm of ``k`` comparisons: ``n`` units (decisions), their mean value and variance
    (``var / n`` is the variance of the mean), and conversions.

    When units come in clusters (a customer's decisions), ``clusters`` counts the clusters and
    ``design_effect`` inflates the binomial variance of the conversion rate; ``var`` must then
    be the cluster-robust one (see :func:`cluster_moments`).
    """

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    conversions: np.ndarray
    clusters: np.ndarray | None = None
    design_effect: np.ndarray | None = None

    @property
    def k(self) -> np.ndarray:
        return self.n if self.clusters is None else self.clusters

    @property
    def rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.conversions / self.n


@dataclass(frozen=True)
class Comparison:
    """Test against control for ``k`` rows: see :func:`compare_arms`."""

    value: Diff  # value per unit (decision), test minus control (Welch)
    relative: tuple[np.ndarray, np.ndarray, np.ndarray]  # uplift / control value, low, high
    conversion: Diff  # conversion rate, test minus control (Newcombe)
    incremental: Diff  # value uplift times the test customers (money)
    q_value: np.ndarray  # BH-adjusted value p-values over the rows that are "ok"
    q_conversion: np.ndarray
    status: np.ndarray  # (k,) str: ok | too_small | no_control | no_conversions
    reason: np.ndarray  # (k,) str: why a row is not ok, "" if it is


def compare_arms(
    test: ArmStats, control: ArmStats, *, alpha: float = 0.05, min_per_arm: int = MIN_PER_ARM
) -> Comparison:
    """Compare the arms of ``k`` report rows.

    A row is not ``ok`` (its intervals and p-values are NaN, and it takes no part in the
    Benjamini-Hochberg family) when its control arm is empty (``no_control``), an arm has fewer
    than ``min_per_arm`` customers (``too_small``), or nobody converted in either arm
    (``no_conversions``). The point estimates stay, so nothing is hidden.
    """
    value = welch_diff(
        test.n,
        test.mean,
        test.var,
        control.n,
        control.mean,
        control.var,
        alpha=alpha,
        k1=test.k,
        k0=control.k,
    )
    # Clustered conversions: Newcombe on effective counts (counts / design effect, Rao-Scott).
    d1 = np.ones(len(test.n)) if test.design_effect is None else test.design_effect
    d0 = np.ones(len(control.n)) if control.design_effect is None else control.design_effect
    conversion = newcombe_diff(
        test.conversions / d1, test.n / d1, control.conversions / d0, control.n / d0, alpha=alpha
    )
    se1 = np.sqrt(test.var / np.maximum(test.n, 1))
    se0 = np.sqrt(control.var / np.maximum(control.n, 1))
    ratio, r_lo, r_hi = fieller_ratio(test.mean, se1, control.mean, se0, alpha=alpha)
    k = len(test.n)
    status = np.full(k, STATUS_OK, dtype=object)
    reason = np.full(k, "", dtype=object)
    for i in range(k):
        t_n, c_n = int(test.k[i]), int(control.k[i])
        if c_n == 0:
            status[i], reason[i] = STATUS_NO_CONTROL, "no control group"
        elif min(t_n, c_n) < min_per_arm:
            small = [
                f"{arm} ({n})" for arm, n in (("test", t_n), ("control", c_n)) if n < min_per_arm
            ]
            status[i] = STATUS_SMALL
            reason[i] = f"fewer than {min_per_arm} customers in {' and '.join(small)}"
        elif test.conversions[i] + control.conversions[i] == 0:
            status[i], reason[i] = STATUS_NO_CONVERSIONS, "no conversions in either group"
    bad = status != STATUS_OK
    nan = np.full(k, np.nan)

    def blank(d: Diff) -> Diff:
        return Diff(
            d.estimate,
            np.where(bad, nan, d.low),
            np.where(bad, nan, d.high),
            np.where(bad, nan, d.se),
            np.where(bad, nan, d.p_value),
        )

    value, conversion = blank(value), blank(conversion)
    n1 = test.n.astype(np.float64)
    incremental = Diff(
        value.estimate * n1, value.low * n1, value.high * n1, value.se * n1, value.p_value
    )
    relative = (
        ratio - 1.0,
        np.where(bad, nan, r_lo - 1.0),
        np.where(bad, nan, r_hi - 1.0),
    )
    return Comparison(
        value=value,
        relative=relative,
        conversion=conversion,
        incremental=incremental,
        q_value=benjamini_hochberg(value.p_value),
        q_conversion=benjamini_hochberg(conversion.p_value),
        status=status,
        reason=reason,
    )
