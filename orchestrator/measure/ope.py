"""Off-policy evaluation: what a policy would have earned, estimated from logged decisions.

Shapes (Open Bandit Pipeline's vocabulary): ``n`` logged decisions, ``A`` actions;
``reward (n,)``, ``action (n,)`` the logged action index, ``pscore (n,)`` its probability under
the logging policy, ``action_dist (n, A)`` the evaluated policy's probabilities for the logged
contexts, ``estimated_rewards (n, A)`` a reward model's predictions ``q̂(x_i, a)``.

Estimators, each a mean of per-decision terms, with ``w = action_dist[i, action_i] / pscore_i``:

* ``dm``    direct method: ``Σ_a π(a|x) q̂(x, a)``;
* ``ips``   inverse propensity scoring: ``w·r``;
* ``snips`` self-normalized IPS: ``Σ w·r / Σ w``;
* ``dr``    doubly robust: ``Σ_a π(a|x) q̂(x, a) + w·(r - q̂(x, a_i))``.

Intervals are normal approximations from the influence terms: ``value ± z·sd(ψ)/√n`` with
``ψ`` the per-decision terms (for ``snips`` the delta-method terms ``w·(r - V̂)/mean(w)``). They
treat ``q̂`` as fixed: fit it on other data, or cross-fit it with ``fit_estimated_rewards``,
which keeps ``dr`` honest; ``dm``'s interval ignores the reward model's own error.

>>> reward = np.array([1.0, 0.0, 1.0, 0.0])
>>> action = np.array([0, 1, 1, 0])
>>> pscore = np.full(4, 0.5)
>>> always_0 = np.tile([1.0, 0.0], (4, 1))
>>> est = estimate_policy_value(reward, action, pscore, always_0, estimators=("ips", "snips"))
>>> est["ips"].value, est["snips"].value
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ESTIMATORS = ("dm", "ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its ``1 - alpha`` confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    std_err: float
    n: int


def estimate_policy_value(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None = None,
    estimators: Sequence[str] = ("ips", "snips", "dr"),
    *,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Estimate the value of the policy behind ``action_dist`` with each of ``estimators``.

    Raises ``ValueError`` for inconsistent shapes, an action outside ``[0, A)``, a ``pscore``
    outside ``(0, 1]``, rows of ``action_dist`` that are not distributions, an unknown
    estimator, or ``dm``/``dr`` without ``estimated_rewards``.
    """
    reward, action, pscore, action_dist, q = _validate(
        reward, action, pscore, action_dist, estimated_rewards, estimators
    )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    n = len(reward)
    rows = np.arange(n)
    w = action_dist[rows, action] / pscore
    out: dict[str, Estimate] = {}
    for name in estimators:
        if name == "ips":
            value, terms = _mean(w * reward)
        elif name == "snips":
            total = w.sum()
            if total <= 0.0:
                out[name] = Estimate(np.nan, np.nan, np.nan, np.nan, n)
                continue
            value = float((w * reward).sum() / total)
            terms = w * (reward - value) / (total / n)
        else:
            assert q is not None
            direct = (action_dist * q).sum(axis=1)
            if name == "dm":
                value, terms = _mean(direct)
            else:
                value, terms = _mean(direct + w * (reward - q[rows, action]))
        se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else np.inf
        out[name] = Estimate(value, value - z * se, value + z * se, se, n)
    return out


def paired_difference(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    reference: np.ndarray | None,
    estimated_rewards: np.ndarray,
    *,
    clusters: np.ndarray | None = None,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust estimate of ``V(π) - V(reference)`` on the same logged decisions.

    Each decision's DR term of the reference is subtracted from the policy's before averaging,
    so what both policies earn in common (the customers' own spending, which dwarfs any
    treatment's effect) cancels, and so does every decision on which the two agree: the
    interval is that of the difference, far narrower than two separate intervals.
    ``reference (n, A)`` is another policy's distribution, or None for the logging policy
    itself (its per-decision term is the observed reward). ``clusters (n,)`` (e.g. customer
    codes) makes the standard error robust to decisions of one customer being correlated.

    >>> r = np.array([2.0, 0.0, 2.0, 0.0]); a = np.array([0, 1, 0, 1]); p = np.full(4, 0.5)
    >>> q = np.zeros((4, 2))
    >>> paired_difference(r, a, p, np.tile([1.0, 0.0], (4, 1)), None, q).value
    1.0
    """
    reward, action, pscore, action_dist, q = _validate(
        reward, action, pscore, action_dist, estimated_rewards, ("dr",)
    )
    assert q is not None
    n = len(reward)
    rows = np.arange(n)
    residual = (reward - q[rows, action]) / pscore

    def dr_terms(dist: np.ndarray) -> np.ndarray:
        return (dist * q).sum(axis=1) + dist[rows, action] * residual

    if reference is None:
        terms = dr_terms(action_dist) - reward
    else:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != action_dist.shape:
            raise ValueError(f"reference must have shape {action_dist.shape}, got {ref.shape}")
        terms = dr_terms(action_dist) - dr_terms(ref)
    value = float(terms.mean())
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    se = _std_err(terms - value, clusters)
    return Estimate(value, value - z * se, value + z * se, se, n)


def _std_err(centred: np.ndarray, clusters: np.ndarray | None) -> float:
    """Standard error of a mean of terms (cluster-robust when ``clusters`` are given)."""
    n = len(centred)
    if n < 2:
        return float("inf")
    if clusters is None:
        return float(centred.std(ddof=1) / np.sqrt(n))
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(codes.ravel(), weights=centred)
    g = len(sums)
    if g < 2:
        return float("inf")
    return float(np.sqrt((sums**2).sum() * g / (g - 1)) / n)


def fit_estimated_rewards(
    contexts: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    n_actions: int,
    *,
    ridge: float = 1.0,
    n_folds: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted ``q̂ (n, A)``: a ridge regression of reward on ``[1, z(x)]`` per action.

    Each row's predictions come from a model fitted on the other folds (``n_folds=1``: one model
    on everything, predicted in-sample). Contexts are standardized; the intercept is not
    penalized, so an action with few rows falls back to its mean reward, and an action with
    none to the mean reward of the fold.
    """
    x = np.asarray(contexts, dtype=np.float64)
    action = np.asarray(action)
    reward = np.asarray(reward, dtype=np.float64)
    n = len(reward)
    if x.ndim != 2 or len(x) != n or action.shape != (n,) or reward.shape != (n,):
        raise ValueError("contexts (n, d), action (n,) and reward (n,) must agree on n")
    if n and (action.min() < 0 or action.max() >= n_actions):
        raise ValueError(f"action must be in [0, {n_actions})")
    if n_folds < 1 or ridge < 0:
        raise ValueError("n_folds must be >= 1 and ridge >= 0")
    fold = np.random.default_rng(seed).permutation(n) % n_folds
    out = np.zeros((n, n_actions))
    for k in range(n_folds):
        test = fold == k
        train = ~test if n_folds > 1 else test
        out[test] = _ridge_per_action(
            x[train], action[train], reward[train], x[test], n_actions, ridge
        )
    return out


def _ridge_per_action(
    x: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    x_new: np.ndarray,
    n_actions: int,
    ridge: float,
) -> np.ndarray:
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    sd = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    design = np.column_stack([np.ones(len(x)), (x - mean) / sd])
    design_new = np.column_stack([np.ones(len(x_new)), (x_new - mean) / sd])
    penalty = np.full(design.shape[1], ridge)
    penalty[0] = 0.0
    fallback = float(reward.mean()) if len(reward) else 0.0
    out = np.full((len(x_new), n_actions), fallback)
    for a in range(n_actions):
        rows = action == a
        if not rows.any():
            continue
        xa = design[rows]
        gram = xa.T @ xa + np.diag(penalty)
        coef = np.linalg.lstsq(gram, xa.T @ reward[rows], rcond=None)[0]
        out[:, a] = design_new @ coef
    return out


def _mean(terms: np.ndarray) -> tuple[float, np.ndarray]:
    return float(terms.mean()), terms


def _validate(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None,
    estimators: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    reward = np.asarray(reward, dtype=np.float64)
    action = np.asarray(action)
    pscore = np.asarray(pscore, dtype=np.float64)
    action_dist = np.asarray(action_dist, dtype=np.float64)
    if reward.ndim != 1 or len(reward) == 0:
        raise ValueError(f"reward must have shape (n,) with n >= 1, got {reward.shape}")
    n = len(reward)
    if action.shape != (n,) or pscore.shape != (n,):
        raise ValueError(
            f"reward, action and pscore must have shape (n,): got {reward.shape}, "
            f"{action.shape}, {pscore.shape}"
        )
    if action_dist.ndim != 2 or len(action_dist) != n:
        raise ValueError(f"action_dist must have shape ({n}, A), got {action_dist.shape}")
    n_actions = action_dist.shape[1]
    if not np.issubdtype(action.dtype, np.integer):
        raise ValueError(f"action must hold integers, got dtype {action.dtype}")
    if action.min() < 0 or action.max() >= n_actions:
        raise ValueError(f"action must be in [0, {n_actions}) to index action_dist")
    if not ((pscore > 0) & (pscore <= 1)).all():
        raise ValueError("pscore must be in (0, 1]")
    if not np.isfinite(reward).all():
        raise ValueError("reward must be finite")
    if not np.isfinite(action_dist).all() or (action_dist < 0).any():
        raise ValueError("action_dist must hold finite non-negative probabilities")
    if not np.allclose(action_dist.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of action_dist must sum to 1")
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; choose from {ESTIMATORS}")
    q = None
    if any(name in ("dm", "dr") for name in estimators):
        if estimated_rewards is None:
            raise ValueError("estimators 'dm' and 'dr' need estimated_rewards (n, A)")
        q = np.asarray(estimated_rewards, dtype=np.float64)
        if q.shape != action_dist.shape:
            raise ValueError(
                f"estimated_rewards must have shape {action_dist.shape}, got {q.shape}"
            )
        if not np.isfinite(q).all():
            raise ValueError("estimated_rewards must be finite")
    return reward, action, pscore, action_dist, q
