"""Predicted value: BG/NBD for how many purchases, Gamma-Gamma for how much each, per customer.

``expected_value = expected_purchases x expected_order_value`` over the horizon, and
``churn_risk = 1 - p_alive``. Time to the next purchase: ``p_buy_7d`` and ``p_buy_30d``, the
probability of at least one purchase in the next 7 and 30 days, and ``days_to_next_purchase``,
the median wait of a customer who is still active. Customers without a purchase get no
prediction (NaN). A model is not fitted when there are too few customers to fit it; the notes say
why, and its predictions stay NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.segments import bgnbd, gamma_gamma
from orchestrator.segments.config import ModelConfig
from orchestrator.segments.summary import PurchaseHistory

UNIT_DAYS = {"days": 1.0, "weeks": 7.0}
BUCKETS = 7  # frequency buckets 0..6 and 7+
P_BUY_DAYS = (7, 30)  # windows of the next-purchase probabilities


@dataclass(frozen=True)
class ValueModel:
    """The fitted models (None when not fitted) and their fit diagnostics."""

    time_unit: str
    horizon_days: int
    bgnbd: bgnbd.BgNbdFit | None
    gamma_gamma: gamma_gamma.GammaGammaFit | None
    observed_buckets: tuple[float, ...] = ()
    expected_buckets: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()
    bgnbd_errors: tuple[float, ...] = ()  # standard errors of r, alpha, a, b
    gamma_gamma_errors: tuple[float, ...] = ()  # standard errors of p, q, v

    @property
    def unit(self) -> float:
        return UNIT_DAYS[self.time_unit]


@dataclass(frozen=True)
class ValuePredictions:
    """Per customer (n,), NaN where unknown."""

    p_alive: np.ndarray
    expected_purchases: np.ndarray
    expected_order_value: np.ndarray
    expected_value: np.ndarray
    p_buy_7d: np.ndarray  # P(at least one purchase in the next 7 days)
    p_buy_30d: np.ndarray
    days_to_next_purchase: np.ndarray  # median wait, if the customer is still active

    @property
    def churn_risk(self) -> np.ndarray:
        return 1.0 - self.p_alive


def model_inputs(history: PurchaseHistory, unit: float) -> tuple[np.ndarray, ...]:
    """``x, t_x, T`` of the customers who bought (k,), in the time unit, and their indices."""
    who = np.flatnonzero(history.bought)
    x = history.repeats[who].astype(np.float64)
    return x, history.span[who] / unit, history.tenure[who] / unit, who


def fit_value_model(
    history: PurchaseHistory, config: ModelConfig, *, bgnbd_init: bgnbd.BgNbdParams | None = None
) -> ValueModel:
    """Fit BG/NBD to every customer who bought and Gamma-Gamma to the repeat customers
    (BG/NBD's search starts from ``bgnbd_init`` when given, e.g. the last refresh's fit)."""
    unit = UNIT_DAYS[config.time_unit]
    x, t_x, T, who = model_inputs(history, unit)
    notes: list[str] = []
    bg: bgnbd.BgNbdFit | None = None
    bg_errors: tuple[float, ...] = ()
    gg_errors: tuple[float, ...] = ()
    observed: tuple[float, ...] = ()
    expected: tuple[float, ...] = ()
    if len(x) < config.min_customers:
        notes.append(
            f"BG/NBD not fitted: {len(x)} customers with a purchase, fewer than "
            f"{config.min_customers}"
        )
    elif not (x > 0).any():
        notes.append("BG/NBD not fitted: no customer has a repeat purchase")
    else:
        bg = bgnbd.fit(x, t_x, T, max_iterations=config.max_iterations, init=bgnbd_init)
        # Delta method: se(theta) = theta * se(log theta).
        se = bg.params.as_array() * bgnbd.log_standard_errors(bg.params, x, t_x, T)
        bg_errors = tuple(float(v) for v in se)
        obs, exp = bgnbd.frequency_buckets(bg.params, x, T, BUCKETS)
        observed, expected = tuple(obs.tolist()), tuple(exp.tolist())
        if not bg.converged:
            notes.append(f"BG/NBD did not converge: {bg.message}")
    gg: gamma_gamma.GammaGammaFit | None = None
    m = history.repeat_order_value[who]
    usable = (x > 0) & (m > 0)
    if int(usable.sum()) < config.min_customers:
        notes.append(
            f"Gamma-Gamma not fitted: {int(usable.sum())} repeat customers with a positive "
            f"order value, fewer than {config.min_customers}"
        )
    else:
        gg = gamma_gamma.fit(x[usable], m[usable], max_iterations=config.max_iterations)
        se = gg.params.as_array() * gamma_gamma.log_standard_errors(gg.params, x[usable], m[usable])
        gg_errors = tuple(float(v) for v in se)
        if not gg.converged:
            notes.append(f"Gamma-Gamma did not converge: {gg.message}")
        if gg.params.q <= 1:
            notes.append("Gamma-Gamma: q <= 1, the mean order value is unbounded; no values")
    return ValueModel(
        time_unit=config.time_unit,
        horizon_days=config.horizon_days,
        bgnbd=bg,
        gamma_gamma=gg,
        observed_buckets=observed,
        expected_buckets=expected,
        notes=tuple(notes),
        bgnbd_errors=bg_errors,
        gamma_gamma_errors=gg_errors,
    )


def predict_value(model: ValueModel, history: PurchaseHistory) -> ValuePredictions:
    """P(alive), expected purchases, order value and value over the horizon; each (n,)."""
    n = len(history.days)
    p_alive = np.full(n, np.nan)
    purchases = np.full(n, np.nan)
    order_value = np.full(n, np.nan)
    p_buy = {days: np.full(n, np.nan) for days in P_BUY_DAYS}
    to_next = np.full(n, np.nan)
    x, t_x, T, who = model_inputs(history, model.unit)
    if model.bgnbd is not None and len(who):
        params = model.bgnbd.params
        # Whole-day data repeat a lot: predict once per distinct (x, t_x, T).
        ux, ut, uT, _, at = bgnbd.compress(x, t_x, T)
        p_alive[who] = bgnbd.p_alive(params, ux, ut, uT)[at]
        horizon = model.horizon_days / model.unit
        purchases[who] = bgnbd.expected_purchases(params, horizon, ux, ut, uT)[at]
        for days, out in p_buy.items():
            out[who] = bgnbd.p_purchase_within(params, days / model.unit, ux, ut, uT)[at]
        to_next[who] = bgnbd.median_time_to_next(params, ux, uT)[at] * model.unit
    if model.gamma_gamma is not None and len(who):
        m = np.nan_to_num(history.repeat_order_value[who], nan=0.0)
        order_value[who] = gamma_gamma.expected_order_value(
            model.gamma_gamma.params, x, np.maximum(m, 0.0)
        )
    return ValuePredictions(
        p_alive=p_alive,
        expected_purchases=purchases,
        expected_order_value=order_value,
        expected_value=purchases * order_value,
        p_buy_7d=p_buy[7],
        p_buy_30d=p_buy[30],
        days_to_next_purchase=to_next,
    )


def bucket_labels(k: int = BUCKETS) -> list[str]:
    return [str(i) for i in range(k)] + [f"{k}+"]


def model_report(model: ValueModel) -> dict[str, Any]:
    """The fitted parameters and diagnostics as plain JSON-ready data."""
    out: dict[str, Any] = {
        "time_unit": model.time_unit,
        "horizon_days": model.horizon_days,
        "notes": list(model.notes),
        "bgnbd": None,
        "gamma_gamma": None,
        "frequency_buckets": [],
    }
    if model.bgnbd is not None:
        fit = model.bgnbd
        out["bgnbd"] = {
            "r": fit.params.r,
            "alpha": fit.params.alpha,
            "a": fit.params.a,
            "b": fit.params.b,
            "standard_errors": dict(zip(("r", "alpha", "a", "b"), model.bgnbd_errors, strict=True)),
            "log_likelihood": fit.log_likelihood,
            "n_customers": fit.n,
            "converged": fit.converged,
            "iterations": fit.iterations,
            "message": fit.message,
        }
        out["frequency_buckets"] = [
            {"repeat_purchases": label, "observed": obs, "expected": exp}
            for label, obs, exp in zip(
                bucket_labels(), model.observed_buckets, model.expected_buckets, strict=True
            )
        ]
    if model.gamma_gamma is not None:
        gg = model.gamma_gamma
        out["gamma_gamma"] = {
            "p": gg.params.p,
            "q": gg.params.q,
            "v": gg.params.v,
            "standard_errors": dict(zip(("p", "q", "v"), model.gamma_gamma_errors, strict=True)),
            "population_mean_order_value": (gg.params.population_mean if gg.params.q > 1 else None),
            "log_likelihood": gg.log_likelihood,
            "n_customers": gg.n,
            "converged": gg.converged,
            "iterations": gg.iterations,
            "message": gg.message,
            "frequency_value_correlation": gg.correlation,
        }
    return out
