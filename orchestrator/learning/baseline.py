"""The no-contact baseline, and the incremental rewards learners are fed.

A decision's reward is what its customer spent inside the measurement window, minus the
treatment's cost. As it stands it does not compare actions: most of it is what the customer would
have spent anyway, and windows differ (7 days for one campaign, 14 for another, the plan's
``no_send_measurement_days`` for sending nothing), so a longer window simply looks better. The
learners are therefore given the *incremental* reward

    reward - window_days × b(x)

where ``b(x)`` is the customer's expected spending per day without any contact, learned from
the decisions that contacted nobody: the control groups and "send nothing". For those
decisions the incremental reward averages zero; for a send it estimates the send's uplift on
its own window, in money. The baseline is a weighted ridge regression of window revenue on
``window_days × [1, z(x)]`` (``z`` standardizes each context column), weighted ``1 / window``
because the variance of a window's revenue grows with its length.

>>> rng = np.random.default_rng(0)
>>> x = rng.random((2000, 1)).astype(np.float32)
>>> w = rng.choice([3, 7, 14], 2000)
>>> y = w * (1.0 + 2.0 * x[:, 0]) + rng.normal(0, 0.1, 2000)
>>> b = fit_baseline(x, w, y, ["spend"])
>>> np.round(b.per_day(np.array([[0.0], [1.0]], np.float32), ["spend"]), 1).tolist()
[1.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.engine.columns import align
from orchestrator.learning.logged import LoggedDay


@dataclass(frozen=True)
class Baseline:
    """``b(x) = coef · [1, (x - mean) / scale]`` per day, over the context ``names``."""

    names: tuple[str, ...]
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (d + 1,)
    n: int

    def per_day(self, contexts: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``(n,)`` expected no-contact spending per day of ``contexts (n, d')`` named ``names``."""
        x = align(np.asarray(contexts), names, self.names).astype(np.float64)
        return self.coef[0] + ((x - self.mean) / self.scale) @ self.coef[1:]

    def incremental(self, day: LoggedDay) -> np.ndarray:
        """``(n,)`` the day's rewards minus the baseline over each decision's window."""
        return day.reward - day.window_days * self.per_day(day.contexts, day.names)


def no_contact(day: LoggedDay) -> np.ndarray:
    """``(n,)`` bool: decisions that contacted nobody (control group or "send nothing")."""
    labels = np.array([label == NO_SEND_LABEL for label in day.labels] + [False])
    return day.control | labels[day.action]


def fit_baseline(
    contexts: np.ndarray,
    window_days: np.ndarray,
    revenue: np.ndarray,
    names: Sequence[str],
    *,
    ridge: float = 1.0,
) -> Baseline:
    """Fit ``b`` on no-contact decisions: ``contexts (n, d)``, ``window_days (n,)``,
    ``revenue (n,)`` (what each customer spent in the window)."""
    x = np.asarray(contexts, dtype=np.float64)
    w = np.asarray(window_days, dtype=np.float64)
    y = np.asarray(revenue, dtype=np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    scale = np.where(scale > 1e-9, scale, 1.0)
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale]) * np.sqrt(w)[:, None]
    target = y / np.sqrt(np.maximum(w, 1e-9))
    penalty = np.full(design.shape[1], ridge)
    penalty[0] = 0.0  # the level is not shrunk: with no column informative it is the mean rate
    gram = design.T @ design + np.diag(penalty)
    coef = np.linalg.lstsq(gram, design.T @ target, rcond=None)[0]
    return Baseline(tuple(names), mean, scale, coef, len(y))


def baseline_from_days(days: Sequence[LoggedDay], names: Sequence[str]) -> Baseline | None:
    """The baseline fitted on the no-contact decisions of ``days`` (None when there are none)."""
    parts = [(d, no_contact(d)) for d in days]
    parts = [(d, m) for d, m in parts if m.any()]
    if not parts:
        return None
    return fit_baseline(
        np.vstack([align(d.contexts[m], d.names, names) for d, m in parts]),
        np.concatenate([d.window_days[m] for d, m in parts]),
        np.concatenate([d.reward[m] for d, m in parts]),
        names,
    )
