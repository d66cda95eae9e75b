"""What a learning policy does before any version of it is active: test on a share, spare the rest.

An untrained learner knows nothing of what a message earns, but it does know what a message costs
(the treatment's cost, the margin a discount gives away, the customer's patience). Sending at
random to everyone until the first model is good enough would spend all of that on a guess. So
until the first promotion the engine explores on a share of the customers (uniformly among
their eligible actions: the data the first model learns from) and sends nothing to the others.
Where "send nothing" is not an option (a manual priority's treatments), the choice is uniform.

The share is of *customers*, the same ones every day (a draw keyed on the customer alone): a
customer spared today is spared tomorrow. Drawn afresh each day, a quarter of the customers
"sent nothing" yesterday (which uses no frequency cap) would be explored today, another quarter
of the rest tomorrow, and within a week the share explored on would be most of the base: as
costly as sending at random to everyone, which is what a cold start is there to avoid.

>>> no_send = np.array([0.0, 1.0])
>>> p = ColdStart(explore=0.2, no_send=no_send)
>>> p.action_dist(np.zeros((1, 1)), np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]),
...               np.array([[True, True, True]])).round(4).tolist()
[[0.0667, 0.0667, 0.8667]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.engine.hashing import Draws
from policies.base import Choice, Policy, sample_rows, uniform_over


class ColdStart(Policy):
    """``explore`` share uniform over the eligible actions, the rest on ``no_send`` (the action
    feature row of "send nothing"; None: uniform everywhere)."""

    name = "cold_start"
    uses_context = False
    learns = False

    def __init__(self, *, explore: float = 0.25, no_send: np.ndarray | None = None) -> None:
        if not 0.0 < explore <= 1.0:
            raise ValueError(f"cold_start: explore must be in (0, 1], got {explore}")
        self.explore = float(explore)
        self.no_send = None if no_send is None else np.asarray(no_send, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"explore": self.explore}

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        eligible = np.asarray(eligible, dtype=bool)
        dist = uniform_over(eligible)
        col = self._no_send_column(action_features)
        if col is None:
            return dist
        spare = eligible[:, col]
        dist[spare] *= self.explore
        dist[spare, col] += 1.0 - self.explore
        return dist

    def choose(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        draws: Draws,
    ) -> Choice:
        """Explorers (a stable ``explore`` share of the customers) get a uniform choice among
        their eligible actions, the others "send nothing"; each propensity is that of the
        customer's own distribution."""
        eligible = np.asarray(eligible, dtype=bool)
        dist = uniform_over(eligible)
        col = self._no_send_column(action_features)
        if col is not None:
            spared = (draws.per_customer("cold_start") >= self.explore) & eligible[:, col]
            dist[spared] = 0.0
            dist[spared, col] = 1.0
        action, propensity = sample_rows(dist, eligible, draws)
        scores = np.where(eligible, 0.0, np.nan)
        return Choice(action, propensity, scores, dist)

    def _no_send_column(self, action_features: np.ndarray) -> int | None:
        if self.no_send is None:
            return None
        feats = np.asarray(action_features, dtype=np.float64)
        is_no_send = (feats == self.no_send[None, :]).all(axis=1)
        return int(np.flatnonzero(is_no_send)[0]) if is_no_send.any() else None
