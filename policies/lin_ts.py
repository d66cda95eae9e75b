"""Linear Thompson sampling over customer × action features (numpy, batched).

Model: ``reward = φ(x, a)ᵀθ + noise`` with ``φ(x, a) = x̃ ⊗ ã``, ``x̃ = [1, z(x)]`` and
``ã = [1, z(a)]``: a bias, every customer feature, every action feature and every
customer-by-action interaction (what VW calls ``-q``). ``z`` standardizes with the mean and
standard deviation of everything learned so far, so raw contexts (money in the thousands next to
0/1 flags) need no scaling upstream, and the ridge prior ``θ ~ N(0, σ²/ridge)`` means the same
thing for every feature. Rows of ``action_features`` are the actions' identities (hashed
campaign, channel and treatment features), so the model follows campaigns from one day to the
next however the action list is ordered.

Learning keeps sufficient statistics in raw units, one group per distinct action-feature row:
``Σ x̃x̃ᵀ``, ``Σ r·x̃``, counts. An update adds to them (no pass over old data); the posterior is
re-solved lazily on the next scoring call, standardization included, because standardizing is
an affine map of raw statistics.

Forgetting. Tastes drift, so old evidence should count less: every ``update`` first multiplies
the statistics by ``0.5 ** (1 / half_life)``, so a batch of decisions weighs half as much
``half_life`` updates later (the learning loop updates once per matured run date, so that is a
half-life in days). ``half_life=None`` never forgets.

Propensities. Thompson sampling picks the argmax of one posterior draw; the probability of each
action has no closed form. The policy therefore *is* its Monte Carlo estimate: after each update
it fixes ``n_draws`` posterior draws (antithetic pairs, from a generator seeded by ``seed`` and
the update count), and a customer's ``action_dist`` is the share of those draws whose argmax,
among the customer's eligible actions, is each action — mixed with ``epsilon`` of uniform
exploration. ``choose`` samples that distribution with the customer's keyed draws (it picks a
draw and plays its argmax: the same law, without the cumulative sums), so the logged propensity is
the exact probability of the logged action. The draws come from the state, not from the batch,
so a customer gets the same distribution whatever batch it lands in; seeded runs repeat.
``draw_per="batch"`` makes a whole run follow one of the draws: correlated choices, identical
propensities. Actions with identical feature rows score alike under every draw; they act as one
and the first eligible of them takes the draws, as ``argmax`` would.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(300, 2)).astype(np.float32)
>>> acts = np.eye(3)
>>> a = rng.integers(0, 3, 300)
>>> r = (a == np.where(x[:, 0] > 0, 0, 2)).astype(float)
>>> ts = LinearTS(epsilon=0.0)
>>> ts.update(x, acts, a, r, np.full(300, 1 / 3))
>>> d = ts.action_dist(np.array([[2.0, 0.0], [-2.0, 0.0]], np.float32), acts, np.ones((2, 3), bool))
>>> d.argmax(axis=1).tolist(), bool(np.allclose(d.sum(axis=1), 1))
([0, 2], True)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.engine.hashing import Draws
from policies.base import (
    Choice,
    Policy,
    check_batch,
    check_log,
    pack_arrays,
    sample_rows,
    uniform_over,
    unpack_arrays,
)

_DTYPES = ("float32", "float64")
_DRAW_PER = ("customer", "batch")
RESEARCH_EVERY = 7  # updates between two searches of the evidence's ridges
_CACHE_SCORES = 1 << 19  # float32 scores per chunk: 2 MB


class LinearTS(Policy):
    """Linear Thompson sampling with a joint customer × action feature map.

    ``ridge`` prior precision (in standardized units; None: the value that maximizes the
    marginal likelihood of the rewards, searched over powers of ten); ``exploration`` scales
    the posterior spread; ``n_draws`` posterior draws define ``action_dist`` (see the module
    docstring);
    ``epsilon`` share of uniform exploration over the eligible actions (keeps every eligible
    action's propensity positive for off-policy evaluation); ``draw_per`` ``"customer"`` or
    ``"batch"``; ``half_life`` updates after which old statistics weigh half (None: never
    forget); ``dtype`` of the scoring arithmetic; ``seed`` of the posterior draws;
    ``chunk_rows`` rows scored at a time (None: as many as keep ``chunk_rows × n_draws × A``
    scores near 2 MB, which stays in cache); ``exploit_confidence`` above 0.5 makes the
    customers outside ``explore_share`` send only what beats "send nothing" with that
    confidence (see ``_pessimistic``; 0.5, the default: the best posterior mean).
    """

    name = "lints"
    state_version = 2  # 2: with the residuals' statistics (the robust spread); 1 loads

    def __init__(
        self,
        *,
        ridge: float | None = None,
        exploration: float = 0.5,
        n_draws: int = 16,
        epsilon: float = 0.05,
        explore_share: float = 0.25,
        exploit_confidence: float = 0.5,
        draw_per: str = "customer",
        half_life: float | None = 14.0,
        dtype: str = "float32",
        seed: int = 0,
        chunk_rows: int | None = None,
    ) -> None:
        if ridge is not None and ridge <= 0:
            raise ValueError(
                f"lints: ridge must be > 0 (or None: chosen from the data), got {ridge}"
            )
        if exploration < 0:
            raise ValueError(f"lints: exploration must be >= 0, got {exploration}")
        if n_draws < 1:
            raise ValueError(f"lints: n_draws must be >= 1, got {n_draws}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"lints: epsilon must be in [0, 1], got {epsilon}")
        if not 0.0 < explore_share <= 1.0:
            raise ValueError(f"lints: explore_share must be in (0, 1], got {explore_share}")
        if not 0.5 <= exploit_confidence < 1.0:
            raise ValueError(
                f"lints: exploit_confidence must be in [0.5, 1), got {exploit_confidence}"
            )
        if draw_per not in _DRAW_PER:
            raise ValueError(f"lints: draw_per must be one of {_DRAW_PER}, got {draw_per!r}")
        if half_life is not None and half_life <= 0:
            raise ValueError(f"lints: half_life must be > 0 (or None), got {half_life}")
        if dtype not in _DTYPES:
            raise ValueError(f"lints: dtype must be one of {_DTYPES}, got {dtype!r}")
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError(f"lints: chunk_rows must be >= 1, got {chunk_rows}")
        self.ridge = None if ridge is None else float(ridge)
        self.exploration = float(exploration)
        self.n_draws = int(n_draws)
        self.epsilon = float(epsilon)
        self.explore_share = float(explore_share)
        self.exploit_confidence = float(exploit_confidence)
        self.draw_per = draw_per
        self.half_life = None if half_life is None else float(half_life)
        self.dtype = dtype
        self.seed = int(seed)
        self.chunk_rows = None if chunk_rows is None else int(chunk_rows)
        # Learned state: sufficient statistics per distinct action-feature row, in raw units.
        self._names: tuple[str, ...] | None = None
        self._keys = np.zeros((0, 0))  # (J, k) action-feature rows
        self._gram = np.zeros((0, 0, 0))  # (J, d+1, d+1) Σ x̃x̃ᵀ, x̃ = [1, x]
        self._xr = np.zeros((0, 0))  # (J, d+1) Σ r·x̃
        self._meat = np.zeros((0, 0, 0))  # (J, d+1, d+1) Σ x̃x̃ᵀe², e: out-of-sample residual
        self._sum_r = 0.0
        self._sum_r2 = 0.0
        self._n_updates = 0
        self._fit: _Posterior | None = None  # solved lazily from the statistics
        self._log_ridge: tuple[float, float] | None = None  # the evidence's last choice

    def params(self) -> dict[str, Any]:
        return {
            "ridge": self.ridge,
            "exploration": self.exploration,
            "n_draws": self.n_draws,
            "epsilon": self.epsilon,
            "explore_share": self.explore_share,
            "exploit_confidence": self.exploit_confidence,
            "draw_per": self.draw_per,
            "half_life": self.half_life,
            "dtype": self.dtype,
            "seed": self.seed,
            "chunk_rows": self.chunk_rows,
        }

    # --- feature names -----------------------------------------------------------------------

    def set_feature_names(self, names: Sequence[str]) -> None:
        """Name the context columns (``engine.columns.context_names``).

        Statistics learned under other names are carried over by name: a new column starts
        with no history (as if it had been 0), a dropped column is forgotten.
        """
        names = tuple(names)
        if self._names is None or not len(self._keys):
            if len(self._keys) and self._gram.shape[1] - 1 != len(names):
                raise ValueError(
                    f"lints: {len(names)} feature names for a model of "
                    f"{self._gram.shape[1] - 1} context columns"
                )
            self._names = names
            return
        if names == self._names:
            return
        old = {name: i + 1 for i, name in enumerate(self._names)}
        new_idx = np.array([0] + [j + 1 for j, name in enumerate(names) if name in old])
        old_idx = np.array([0] + [old[name] for name in names if name in old])
        groups = np.arange(len(self._keys))
        gram = np.zeros((len(self._keys), len(names) + 1, len(names) + 1))
        gram[np.ix_(groups, new_idx, new_idx)] = self._gram[np.ix_(groups, old_idx, old_idx)]
        meat = np.zeros_like(gram)
        meat[np.ix_(groups, new_idx, new_idx)] = self._meat[np.ix_(groups, old_idx, old_idx)]
        xr = np.zeros((len(self._keys), len(names) + 1))
        xr[:, new_idx] = self._xr[:, old_idx]
        self._gram, self._meat, self._xr, self._names = gram, meat, xr, names
        self._fit = None

    # --- scoring -----------------------------------------------------------------------------

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        """Over the customers: ``explore_share`` Thompson sampling, the rest the posterior
        mean's best action (each with the ``epsilon`` mix)."""
        if self.explore_share >= 1.0 or self._posterior() is None:
            return self._dist(contexts, action_features, eligible)[0]
        sampled, _, scores, exploit = self._dist(contexts, action_features, eligible, None, True)
        assert exploit is not None
        greedy = self._greedy_dist(exploit, np.asarray(eligible, dtype=bool))
        return self.explore_share * sampled + (1.0 - self.explore_share) * greedy

    def _greedy_dist(self, scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """``(n, A)``: the best posterior mean with ``1 - epsilon``, ``epsilon`` uniform."""
        best = np.where(eligible, scores, -np.inf).argmax(axis=1)
        dist = np.zeros(eligible.shape)
        has_any = eligible.any(axis=1)
        dist[np.flatnonzero(has_any), best[has_any]] = 1.0 - self.epsilon
        share = self.epsilon / np.maximum(np.count_nonzero(eligible, axis=1), 1)
        np.add(dist, share[:, None], out=dist, where=eligible)
        return dist

    def choose(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        draws: Draws,
    ) -> Choice:
        """Sample from ``action_dist`` the cheap way: pick a draw (per customer, or one for the
        run), play its argmax; with probability ``epsilon`` pick uniformly instead."""
        eligible = np.asarray(eligible, dtype=bool)
        if self._posterior() is None:
            return super().choose(contexts, action_features, eligible, draws)
        n = len(eligible)
        if self.draw_per == "batch":
            pick = min(int(draws.shared("lints.draw") * self.n_draws), self.n_draws - 1)
            which = np.full(n, pick, dtype=np.int64)
        else:
            which = draws.integers(self.n_draws, "lints.draw")
        dist, greedy, scores, exploit = self._dist(contexts, action_features, eligible, which, True)
        assert greedy is not None and scores is not None and exploit is not None
        action = greedy
        if self.explore_share < 1.0:
            # Thompson sampling on a stable share of the customers; the others get the best
            # action under the posterior mean. A day's decisions are one batch whose outcomes
            # arrive together, days later: sampling on every customer of the batch buys
            # little more information than on a share, at the full cost of every bad draw.
            sampler = draws.per_customer("lints.explore_share") < self.explore_share
            mean_best = np.where(eligible, exploit, -np.inf).argmax(axis=1)
            action = np.where(sampler, greedy, mean_best)
            dist = np.where(sampler[:, None], dist, self._greedy_dist(exploit, eligible))
        explore = np.flatnonzero(draws.uniform("explore") < self.epsilon)
        if len(explore):
            action[explore] = sample_rows(
                uniform_over(eligible[explore]), eligible[explore], draws.take(explore)
            )[0]
        has_any = np.asarray(eligible.any(axis=1))
        action[~has_any] = -1
        propensity = np.where(has_any, dist[np.arange(n), np.maximum(action, 0)], 0.0)
        return Choice(action, propensity, scores, dist)

    def _dist(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        which: np.ndarray | None = None,
        with_scores: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(n, A)`` distribution; each row's argmax under draw ``which (n,)`` if given; the
        posterior mean scores (NaN where ineligible) if asked, from the same pass, and the
        scores the exploiting customers are given (see ``_pessimistic``)."""
        contexts, action_features, eligible = self._check(contexts, action_features, eligible)
        fit = self._posterior()
        if fit is None:
            return uniform_over(eligible), None, None, None
        # Actions with identical features score alike under every draw: score each distinct
        # row once and give its draws to the group's first eligible member (argmax's rule).
        groups = _Groups(action_features)
        coefs = np.vstack([fit.draws, fit.mean]) if with_scores else fit.draws
        weights = fit.score_matrix(groups.rows, coefs, self._np_dtype)
        ref = None  # "send nothing", against which the cautious option measures each send
        if with_scores and self.exploit_confidence > 0.5:
            ref = _row_of(groups.rows, _no_send_row(groups.rows.shape[1]))
        counts, picked, mean, spread = self._argmax_counts(
            contexts, groups.eligible(eligible), weights, which, with_scores, ref
        )
        counts, picked = groups.expand(counts, picked, eligible)
        counts *= (1.0 - self.epsilon) / fit.draws.shape[0]
        if self.epsilon > 0.0:
            share = self.epsilon / np.maximum(np.count_nonzero(eligible, axis=1), 1)
            np.add(counts, share[:, None], out=counts, where=eligible)
        scores = exploit = None
        if mean is not None:
            scores = np.take(mean, groups.of, axis=1) if groups.shared else mean
            np.copyto(scores, np.nan, where=~eligible)
            exploit = scores
            if spread is not None:
                spread = np.take(spread, groups.of, axis=1) if groups.shared else spread
                exploit = self._pessimistic(scores, spread, eligible)
        return counts, picked, scores, exploit

    def _pessimistic(
        self, scores: np.ndarray, spread: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        """Scores for the customers who exploit: each send's posterior mean gain over sending
        nothing lowered by ``z`` posterior standard deviations of that gain (sending nothing
        keeps its mean), so that the send finally chosen beats sending nothing with
        probability ``exploit_confidence`` even though it is the best of a customer's ``K``
        eligible sends: ``z`` is the normal quantile of ``exploit_confidence ** (1 / K)``
        (Šidák's correction for ``K`` comparisons).

        The best of many noisy estimates is biased upward (the optimizer's curse): with a few
        dozen sends per action and money noise, the best of 28 actions each truly worth -0.5
        looked positive, and the greedy share sent to almost everyone in a world where every
        message loses money. The exploring share still samples the posterior; as evidence
        accumulates the deviations shrink and the means decide."""
        from scipy.stats import norm

        sends = np.maximum(np.count_nonzero(eligible, axis=1) - 1, 1)
        z = norm.ppf(self.exploit_confidence ** (1.0 / sends)).astype(scores.dtype)
        width = self.exploration if self.exploration > 0 else 1.0
        return scores - z[:, None] * spread / width

    def _scores(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        dist: np.ndarray,
    ) -> np.ndarray:
        """The posterior mean reward of each eligible action (NaN elsewhere)."""
        fit = self._posterior()
        if fit is None:
            return np.where(eligible, 0.0, np.nan)
        dtype = self._np_dtype
        weights = fit.score_matrix(
            np.asarray(action_features, dtype=np.float64), fit.mean[None], dtype
        )
        mean = np.asarray(contexts, dtype=dtype) @ weights[:, :-1].T
        mean += weights[:, -1]
        np.copyto(mean, np.nan, where=~np.asarray(eligible, dtype=bool))
        return mean

    @property
    def _np_dtype(self) -> type[np.floating[Any]]:
        return np.float32 if self.dtype == "float32" else np.float64

    def _argmax_counts(
        self,
        contexts: np.ndarray,
        eligible: np.ndarray,
        weights: np.ndarray,
        which: np.ndarray | None = None,
        last_is_mean: bool = False,
        ref: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """How many of the draws pick each action: ``(n, A)`` counts; if asked, each row's pick
        under draw ``which (n,)`` (from the same arithmetic, so it is always counted); and if
        ``last_is_mean``, the last coefficient vector's scores ``(n, A)`` (not a draw); and if
        ``ref`` is an action, the standard deviation over the draws of each action's score
        minus ``ref``'s ``(n, A)``.

        ``weights (A·S, d+1)``, rows ordered (action, draw), last column the bias. Rows of the
        batch are scored in cache-sized chunks laid out ``(A, S, m)``, so the max over actions
        is a vectorized reduction over contiguous rows (``argmax`` over a short last axis costs
        three times more); the draws at the max are counted. Ties (identical action features)
        are rare and re-done exactly: the first action at the max takes the draw.
        """
        n, d = contexts.shape
        n_actions = eligible.shape[1]
        counts = np.zeros((n, n_actions))
        picked = np.zeros(n, dtype=np.int64) if which is not None else None
        dtype = weights.dtype
        mean = np.zeros((n, n_actions), dtype=dtype) if last_is_mean else None
        spread = np.zeros((n, n_actions), dtype=dtype) if ref is not None else None
        if n == 0 or n_actions == 0:
            return counts, picked, mean, spread
        width = weights.shape[0] // n_actions
        n_draws = width - last_is_mean
        tally = np.uint8 if n_draws < 256 else np.int64
        has_any = np.asarray(eligible.any(axis=1))
        step = self.chunk_rows or max(64, _CACHE_SCORES // max(width * n_actions, 1))
        xt = np.empty((d + 1, min(step, n)), dtype=dtype)
        xt[d] = 1.0
        zero, minus_inf = dtype.type(0.0), dtype.type(-np.inf)
        for start in range(0, n, step):
            m = min(step, n - start)
            rows = slice(start, start + m)
            xt[:d, :m] = contexts[rows].T
            block = (weights @ xt[:, :m]).reshape(n_actions, width, m)
            if mean is not None:
                mean[rows] = block[:, n_draws, :].T
            scores = block[:, :n_draws, :]
            if spread is not None:
                spread[rows] = (scores - scores[ref]).std(axis=1).T
            scores += np.where(eligible[rows].T, zero, minus_inf)[:, None, :]
            top = np.maximum.reduce(scores, axis=0)  # (S, m)
            hit = scores == top
            chunk = np.add.reduce(hit.view(np.uint8), axis=1, dtype=tally).T  # (m, A)
            tied = np.flatnonzero((chunk.sum(axis=1) > n_draws) & has_any[rows])
            if len(tied):
                first = scores[:, :, tied].argmax(axis=0)  # (S, t)
                chunk = chunk.astype(np.int64)
                chunk[tied] = 0
                np.add.at(chunk, (np.broadcast_to(tied, first.shape), first), 1)
                hit[:, :, tied] = first[None] == np.arange(n_actions)[:, None, None]
            counts[rows] = chunk
            if picked is not None and which is not None:
                picked[rows] = hit[:, which[rows], np.arange(m)].argmax(axis=0)
        counts[~has_any] = 0.0
        return counts, picked, mean, spread

    # --- learning ----------------------------------------------------------------------------

    def update(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
    ) -> None:
        """Add the logged rows to the sufficient statistics (propensities are not needed: the
        regression of reward on context and action is unbiased under any logging policy that
        depends on the context only)."""
        x, feats, actions, rewards = check_log(
            "lints", contexts, action_features, actions, rewards, propensities
        )
        if not len(actions):
            return
        d, k = x.shape[1], feats.shape[1]
        if len(self._keys) and (self._gram.shape[1] != d + 1 or self._keys.shape[1] != k):
            raise ValueError(
                f"lints: learned on {self._gram.shape[1] - 1} context and "
                f"{self._keys.shape[1]} action features, got {d} and {k}"
            )
        if not len(self._keys):
            self._keys = np.zeros((0, k))
            self._gram = np.zeros((0, d + 1, d + 1))
            self._meat = np.zeros((0, d + 1, d + 1))
            self._xr = np.zeros((0, d + 1))
        # Residuals of the model as it was before these rows (out of sample; the rewards
        # themselves before there is a model): what the spread of the posterior is made of.
        residual = rewards - self._predict(x, feats, actions)
        if self.half_life is not None and len(self._keys):
            keep = 0.5 ** (1.0 / self.half_life)
            self._gram *= keep
            self._meat *= keep
            self._xr *= keep
            self._sum_r *= keep
            self._sum_r2 *= keep
        xt = np.empty((len(x), d + 1))
        xt[:, 0] = 1.0
        xt[:, 1:] = x
        index = {row.tobytes(): j for j, row in enumerate(self._keys)}
        present, inverse = np.unique(actions, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(present) + 1))
        new_keys: list[np.ndarray] = []
        new_gram: list[np.ndarray] = []
        new_meat: list[np.ndarray] = []
        new_xr: list[np.ndarray] = []
        for i, action in enumerate(present):
            rows = order[bounds[i] : bounds[i + 1]]
            block = xt[rows]
            gram, xr = block.T @ block, block.T @ rewards[rows]
            meat = (block * residual[rows, None] ** 2).T @ block
            key = feats[action]
            j = index.get(key.tobytes())
            if j is None:
                index[key.tobytes()] = len(self._keys) + len(new_keys)
                new_keys.append(key)
                new_gram.append(gram)
                new_meat.append(meat)
                new_xr.append(xr)
            elif j >= len(self._keys):
                new_gram[j - len(self._keys)] += gram
                new_meat[j - len(self._keys)] += meat
                new_xr[j - len(self._keys)] += xr
            else:
                self._gram[j] += gram
                self._meat[j] += meat
                self._xr[j] += xr
        if new_keys:
            self._keys = np.concatenate([self._keys, np.stack(new_keys)])
            self._gram = np.concatenate([self._gram, np.stack(new_gram)])
            self._meat = np.concatenate([self._meat, np.stack(new_meat)])
            self._xr = np.concatenate([self._xr, np.stack(new_xr)])
        self._sum_r += float(rewards.sum())
        self._sum_r2 += float(rewards @ rewards)
        self._n_updates += 1
        self._fit = None

    def _predict(self, x: np.ndarray, feats: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``(n,)`` the posterior mean reward of each row's action (0 with no model yet)."""
        fit = self._posterior()
        if fit is None:
            return np.zeros(len(actions))
        weights = fit.score_matrix(feats, fit.mean[None], np.float64)[actions]
        return np.einsum("ij,ij->i", x, weights[:, :-1]) + weights[:, -1]

    def _posterior(self) -> _Posterior | None:
        if self._fit is None and len(self._keys):
            self._fit = _Posterior.solve(
                self._keys,
                self._gram,
                self._meat,
                self._xr,
                self._sum_r,
                self._sum_r2,
                ridge=self.ridge,
                exploration=self.exploration,
                n_draws=self.n_draws,
                rng=np.random.default_rng([self.seed, self._n_updates]),
                start=self._log_ridge,
                # The evidence moves slowly: searched again every RESEARCH_EVERY updates,
                # otherwise the last choice is kept (one factorization instead of several).
                search=self._log_ridge is None or self._n_updates % RESEARCH_EVERY == 0,
            )
            self._log_ridge = self._fit.log_ridge
        return self._fit

    # --- state -------------------------------------------------------------------------------

    def _state_payload(self) -> bytes:
        # The solved posterior travels with the statistics (solving is the costly part of
        # loading a model), tagged with what it was solved under.
        fit = self._posterior()
        meta = {
            "names": list(self._names) if self._names is not None else None,
            "sum_r": self._sum_r,
            "sum_r2": self._sum_r2,
            "n_updates": self._n_updates,
            "fit": self._fit_key() if fit is not None else None,
            "log_ridge": list(self._log_ridge) if self._log_ridge is not None else None,
            "meat": True,
        }
        arrays = [self._keys, self._gram, self._xr, self._meat]
        if fit is not None:
            arrays += [fit.mean, fit.draws, fit.x_map, fit.a_map]
        return pack_arrays(meta, arrays)

    def _load_payload(self, payload: bytes) -> None:
        meta, _ = unpack_arrays(payload, 0)
        has_fit = meta.get("fit") is not None
        stats = 4 if meta.get("meat") else 3
        meta, arrays = unpack_arrays(payload, stats + (4 if has_fit else 0))
        self._keys, self._gram, self._xr = arrays[:3]
        if stats == 4:
            self._meat = arrays[3]
        else:  # saved before the robust spread: the constant-noise equivalent
            n = float(self._gram[:, 0, 0].sum()) if len(self._gram) else 0.0
            var = max(meta["sum_r2"] / n - (meta["sum_r"] / n) ** 2, 0.0) if n else 0.0
            self._meat = self._gram * var
        arrays = arrays[:3] + arrays[stats:]
        self._names = tuple(meta["names"]) if meta["names"] is not None else None
        self._sum_r, self._sum_r2 = float(meta["sum_r"]), float(meta["sum_r2"])
        self._n_updates = int(meta["n_updates"])
        found = meta.get("log_ridge")
        self._log_ridge = (float(found[0]), float(found[1])) if found else None
        self._fit = None
        if has_fit and meta["fit"] == self._fit_key():
            mean, draws, x_map, a_map = arrays[3:]
            self._fit = _Posterior(mean, draws, x_map, a_map, self._log_ridge)

    def _fit_key(self) -> list[Any]:
        """What a solved posterior depends on besides the statistics."""
        return [self.ridge, self.exploration, self.n_draws, self.seed, self._n_updates]

    # --- input checks ------------------------------------------------------------------------

    def _check(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        contexts = np.asarray(contexts)
        action_features = np.asarray(action_features, dtype=np.float64)
        eligible = np.asarray(eligible, dtype=bool)
        check_batch("lints", contexts, action_features, eligible)
        if not np.isfinite(contexts).all():
            raise ValueError("lints: contexts must be finite")
        if len(self._keys):
            d, k = self._gram.shape[1] - 1, self._keys.shape[1]
            if contexts.shape[1] != d or action_features.shape[1] != k:
                raise ValueError(
                    f"lints: learned on {d} context and {k} action features, got "
                    f"{contexts.shape[1]} and {action_features.shape[1]}"
                )
        return contexts, action_features, eligible


class _Posterior:
    """The solved model in standardized units, and the maps back to raw units.

    ``mean (D,)`` and ``draws (S, D)`` are coefficients of ``z(x̃) ⊗ z(ã)`` with
    ``D = (d+1)(k+1)``; ``x_map (d+1, d+1)`` and ``a_map`` take raw ``[1, x]`` and ``[1, a]``
    to standardized ones.
    """

    def __init__(
        self,
        mean: np.ndarray,
        draws: np.ndarray,
        x_map: np.ndarray,
        a_map: np.ndarray,
        log_ridge: tuple[float, float] | None = None,
    ) -> None:
        self.mean, self.draws, self.x_map, self.a_map = mean, draws, x_map, a_map
        # log10 of the ridges the evidence chose: (levels, interactions)
        self.log_ridge = log_ridge

    @classmethod
    def solve(
        cls,
        keys: np.ndarray,
        gram: np.ndarray,
        meat: np.ndarray,
        xr: np.ndarray,
        sum_r: float,
        sum_r2: float,
        *,
        ridge: float | None,
        exploration: float,
        n_draws: int,
        rng: np.random.Generator,
        start: tuple[float, float] | None = None,
        search: bool = True,
    ) -> _Posterior:
        import scipy.linalg  # only when a model is solved: keeps `import policies` light

        dx, da = gram.shape[1], keys.shape[1] + 1
        counts = gram[:, 0, 0]
        n = float(counts.sum())
        pooled = gram.sum(axis=0)
        x_map = _standardizer(pooled[0, 1:] / n, np.diag(pooled)[1:] / n)
        a_raw = np.concatenate([np.ones((len(keys), 1)), keys], axis=1)
        # Action features are scaled, not centred: zero is "send nothing" (rewards are
        # incremental over no contact), and that is what shrinkage should pull an action to,
        # not the average action (with which sending nothing would look as good as anything).
        a_map = _standardizer(np.zeros(keys.shape[1]), counts @ keys**2 / n)
        g = np.einsum("pi,jik,qk->jpq", x_map, gram, x_map, optimize=True)
        h = xr @ x_map.T
        # The observed actions span r <= K of the k hashed action directions. Rotating the
        # action columns (all but the intercept) so that the first r span them, the other
        # directions carry no data: their posterior is their prior exactly (the prior is the
        # same in every direction of that subspace, so the rotation leaves it unchanged), and
        # only a (d+1)(r+1) system is solved (a third of the size on 28 actions of 64 hashed
        # columns, 1/20 of the factorization). Mean and draws are rotated back at the end.
        full = a_raw @ a_map.T
        _, singular, directions = np.linalg.svd(full[:, 1:], full_matrices=True)
        r = int(np.count_nonzero(singular > 1e-10 * max(float(singular.max(initial=0.0)), 1.0)))
        rotation = np.eye(da)
        rotation[1:, 1:] = directions  # rotated coordinates: rotation @ [1, a]
        da_full, da = da, r + 1
        a = (full @ rotation.T)[:, :da]
        # Σ_j G_j ⊗ a_j a_jᵀ as one matrix product, then into Kronecker layout.
        outer_a = np.einsum("jq,jr->jqr", a, a).reshape(len(a), da * da)

        def kron_sum(per_action: np.ndarray) -> np.ndarray:
            total = (per_action.reshape(len(a), dx * dx).T @ outer_a).reshape(dx, dx, da, da)
            return total.transpose(0, 2, 1, 3).reshape(dx * da, dx * da)

        precision = kron_sum(g)
        rhs = (h.T @ a).ravel()
        # Two kinds of coefficient, two priors, both centred on zero (no value over sending
        # nothing): levels (the global one, each action's own ``1 ⊗ a``, each customer
        # feature's ``x ⊗ 1``) and the customer-by-action interactions (thousands of them: the
        # personalization, and the overfitting). Levels are few and each is seen in thousands
        # of rows: they get a weak unit prior, as a regression leaves its intercepts
        # unpenalized (the evidence, which assumes Gaussian noise of one variance, shrank them
        # toward "send nothing" by a factor of three on money rewards whose variance differs
        # fiftyfold between customers, and the choices lost a third of their value). ``ridge``
        # fixes the interactions'; without it the evidence chooses it.
        kinds = np.ones((dx, da), dtype=np.int64)  # 1: interaction
        kinds[0, :] = kinds[:, 0] = 0  # 0: a level
        kind = kinds.ravel()
        base_diag = precision[np.diag_indices_from(precision)].copy()

        def fit(e_level: float, e_inter: float) -> tuple[float, Any, Any, Any]:
            """(-2 log evidence up to a constant, Cholesky factor, mean, prior) with ridges
            ``10**e_level`` on levels and ``10**e_inter`` on interactions."""
            prior = np.where(kind == 0, 10.0**e_level, 10.0**e_inter)
            precision[np.diag_indices_from(precision)] = base_diag + prior
            chol = scipy.linalg.cholesky(precision, lower=True)
            mean = scipy.linalg.cho_solve((chol, True), rhs)
            # With the noise variance profiled out: n log(rss + θᵀΛθ) + log|A| - log|Λ|.
            fit_sq = max(sum_r2 - mean @ rhs, 1e-12 * max(sum_r2, 1.0))
            score = n * np.log(fit_sq) + 2.0 * np.log(np.diag(chol)).sum() - np.log(prior).sum()
            return float(score), chol, mean, prior

        chosen: tuple[float, float] | None = None
        used = (0.0, float(np.log10(ridge))) if ridge is not None else (0.0, 0.0)
        if ridge is not None:
            _, chol, mean, prior = fit(*used)
        else:
            # Empirical Bayes: the interactions' ridge that maximizes the marginal likelihood
            # of the rewards (the prior's spread is learned from the data: with noisy money
            # rewards and effects of a few units, far tighter than one noise sd per
            # coefficient). Searched in half-decades from the previous solution when there is
            # one (it moves little from one day's data to the next), else from a grid; the
            # pair keeps the levels' fixed exponent first.
            tried: dict[tuple[float, float], tuple[float, Any, Any, Any]] = {}

            def at(point: tuple[float, float]) -> float:
                if point not in tried:
                    tried[point] = fit(*point)
                return tried[point][0]

            if start is None:
                best = min(((0.0, e) for e in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)), key=at)
            else:
                best = (0.0, start[1])
                at(best)
            for _ in range(12 if search else 0):
                moves = [(0.0, best[1] + d) for d in (-0.5, 0.5) if -1 <= best[1] + d <= 7]
                step = min(moves, key=at)
                if at(step) >= at(best):
                    break
                best = step
            chosen = used = best
            _, chol, mean, prior = tried[best]
        # Noise: residual variance pooled with D pseudo-rows at the reward variance, so a model
        # with more coefficients than rows does not claim to know the noise.
        rss = max(sum_r2 - mean @ rhs - mean @ (prior * mean), 0.0)
        var_r = max(sum_r2 / n - (sum_r / n) ** 2, 0.0)
        dim = dx * da_full
        sigma = np.sqrt((rss + dim * var_r) / (n + dim))
        half = (n_draws + 1) // 2
        z = rng.standard_normal((dim, half))
        # The spread: the sandwich A⁻¹ (M + σ²Λ) A⁻¹, M = Σ φφᵀe² from the residuals, not
        # σ²A⁻¹. Money rewards are far noisier for some customers than for others (big
        # spenders); one pooled σ² made the posterior sure of slopes on spend fitted to a few
        # large purchases, and a whole day's cohort got the action such a slope favoured.
        # Without data (M = 0) it is the prior's σ²Λ⁻¹, as before.
        robust = kron_sum(np.einsum("pi,jik,qk->jpq", x_map, meat, x_map, optimize=True))
        robust[np.diag_indices_from(robust)] += sigma**2 * prior
        root = scipy.linalg.cholesky(robust, lower=True)
        delta = np.zeros((half, dx, da_full))
        delta[:, :, :da] = scipy.linalg.cho_solve((chol, True), root @ z[: dx * da]).T.reshape(
            half, dx, da
        )
        # The directions no action spans: the prior alone.
        free = np.where(np.arange(dx)[:, None] == 0, 10.0 ** used[0], 10.0 ** used[1])
        delta[:, :, da:] = z[dx * da :].T.reshape(half, dx, da_full - da) * sigma / np.sqrt(free)
        delta *= exploration
        # Back to the unrotated action columns: score = x W (rotation a), so W_a = W rotation.
        coef = np.zeros((dx, da_full))
        coef[:, :da] = mean.reshape(dx, da)
        mean_full = (coef @ rotation).ravel()
        delta_full = (delta @ rotation).reshape(half, dim)
        draws = mean_full + np.concatenate([delta_full, -delta_full])[:n_draws]
        return cls(mean_full, draws, x_map, a_map, chosen)

    def score_matrix(
        self, action_features: np.ndarray, coefs: np.ndarray, dtype: Any
    ) -> np.ndarray:
        """``(A·S, d+1)`` raw-unit weights, rows ordered (action, draw), last column the bias:
        ``W @ [x, 1]`` scores every action under every coefficient vector of ``coefs (S, D)``."""
        dx = self.x_map.shape[0]
        a = np.concatenate([np.ones((len(action_features), 1)), action_features], axis=1)
        a = a @ self.a_map.T  # (A, k+1) standardized
        w = coefs.reshape(len(coefs), dx, -1)  # (S, d+1, k+1)
        per = np.einsum("pi,spq,aq->asi", self.x_map, w, a, optimize=True)  # raw [1, x]
        per = np.concatenate([per[..., 1:], per[..., :1]], axis=-1)
        return np.ascontiguousarray(per.reshape(-1, dx), dtype=dtype)


class _Groups:
    """Actions grouped by identical feature rows, in order of first appearance."""

    def __init__(self, action_features: np.ndarray) -> None:
        _, first, inverse = np.unique(
            action_features, axis=0, return_index=True, return_inverse=True
        )
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.first = first[order]  # (G,) first action of each group
        self.of = rank[inverse.ravel()]  # (A,) group of each action
        self.rows = action_features[self.first]  # (G, k)
        sizes = np.bincount(self.of, minlength=len(self.first))
        self.shared = [np.flatnonzero(self.of == g) for g in np.flatnonzero(sizes > 1)]

    def eligible(self, eligible: np.ndarray) -> np.ndarray:
        """``(n, G)``: some member of the group is eligible."""
        if not self.shared:
            return eligible
        out = eligible[:, self.first]
        for members in self.shared:
            out[:, self.of[members[0]]] = eligible[:, members].any(axis=1)
        return out

    def expand(
        self, counts: np.ndarray, picked: np.ndarray | None, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Group counts ``(n, G)`` and picks back to actions: the first eligible member."""
        if not self.shared:
            return counts, picked
        out = np.take(counts, self.of, axis=1)
        mapped = self.first[picked] if picked is not None else None
        for members in self.shared:
            g = self.of[members[0]]
            lead = members[eligible[:, members].argmax(axis=1)]
            out[:, members] *= members[None, :] == lead[:, None]
            if mapped is not None and picked is not None:
                mapped = np.where(picked == g, lead, mapped)
        return out, mapped


@functools.cache
def _no_send_row(dim: int) -> np.ndarray | None:
    """The engine's feature row of "send nothing" (None for another feature map)."""
    from orchestrator.engine.actions import ACTION_FEATURE_DIM, NO_SEND_FEATURES, hash_features

    return hash_features(NO_SEND_FEATURES) if dim == ACTION_FEATURE_DIM else None


def _row_of(rows: np.ndarray, row: np.ndarray | None) -> int | None:
    """The index of ``row`` among ``rows (G, k)``, None when absent."""
    if row is None or not len(rows):
        return None
    hit = np.flatnonzero((rows == row).all(axis=1))
    return int(hit[0]) if len(hit) else None


def _standardizer(mean: np.ndarray, second_moment: np.ndarray) -> np.ndarray:
    """``T`` with ``T @ [1, v] = [1, (v - mean) / sd]`` (``sd`` 1 where a column is constant)."""
    var = np.maximum(second_moment - mean**2, 0.0)
    # The variance comes from raw moments: for a constant column it is round-off of order
    # 1e-16 × mean², which 1 / sd would blow up. Below a relative 1e-10 a column is constant.
    constant = var <= 1e-10 * np.maximum(mean**2, 1.0)
    sd = np.where(constant, 1.0, np.sqrt(var))
    t = np.zeros((len(mean) + 1, len(mean) + 1))
    t[0, 0] = 1.0
    t[1:, 0] = -mean / sd
    t[1:, 1:] = np.diag(1.0 / sd)
    return t
