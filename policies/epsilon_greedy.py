"""Per-segment epsilon-greedy on mean reward: the simple baseline.

Customers fall into segments; each (segment, action) keeps a count and a reward sum. The greedy
action of a customer is the eligible action with the best shrunken mean in its segment; it gets
``1 - epsilon`` of the probability (split evenly on ties) and every eligible action shares
``epsilon`` uniformly. Means are shrunk toward the action's mean over all segments, itself shrunk
toward the overall mean, with ``prior_count`` pseudo-observations each, so a segment that never
tried an action borrows what the others learned.

Segments come from context columns, by name or by index:

* ``segment_by`` (default ``"lifecycle_stage"``): the one-hot columns named ``f"{segment_by}=..."``
  in the names given to ``set_feature_names`` (the engine passes ``context_names``);
* ``segment_columns``: explicit column indices of a one-hot group, when names are not known.

A row's segment is its first hot column of the group, ``"(none)"`` if none is hot; without a
group there is one global segment. Segments are remembered by name (``lifecycle_stage=active``,
or ``column 3`` when given by index), so the learned state survives a reordering of the context
columns. Actions are remembered by their feature row (hashed campaign, channel and treatment),
not their position in the day's action list.

>>> import numpy as np
>>> p = EpsilonGreedy(epsilon=0.2, segment_columns=[0, 1])
>>> x = np.array([[1, 0], [0, 1]] * 50, dtype=np.float32)
>>> acts = np.eye(2)
>>> p.update(x, acts, np.tile([0, 1], 50), np.tile([1.0, 1.0], 50), np.full(100, 0.5))
>>> p.update(x, acts, np.tile([1, 0], 50), np.tile([0.0, 0.0], 50), np.full(100, 0.5))
>>> p.action_dist(x[:2], acts, np.ones((2, 2), bool)).tolist()
[[0.9, 0.1], [0.1, 0.9]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from policies.base import Policy, check_batch, check_log, pack_arrays, unpack_arrays

_NONE = "(none)"
_GLOBAL = "(all)"


class EpsilonGreedy(Policy):
    """Epsilon-greedy on per-segment mean rewards.

    ``epsilon`` uniform exploration share; ``segment_by`` name prefix of a one-hot group of
    context columns; ``segment_columns`` explicit indices of that group (overrides
    ``segment_by``); ``prior_count`` pseudo-observations behind each shrunken mean.
    """

    name = "egreedy"
    state_version = 1

    def __init__(
        self,
        *,
        epsilon: float = 0.1,
        segment_by: str | None = "lifecycle_stage",
        segment_columns: Sequence[int] | None = None,
        prior_count: float = 1.0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"egreedy: epsilon must be in [0, 1], got {epsilon}")
        if prior_count < 0:
            raise ValueError(f"egreedy: prior_count must be >= 0, got {prior_count}")
        if segment_columns is not None and any(int(c) < 0 for c in segment_columns):
            raise ValueError("egreedy: segment_columns must be non-negative column indices")
        self.epsilon = float(epsilon)
        self.segment_by = segment_by
        self.segment_columns = (
            tuple(int(c) for c in segment_columns) if segment_columns is not None else None
        )
        self.prior_count = float(prior_count)
        self._columns: tuple[int, ...] = self.segment_columns or ()
        self._labels: tuple[str, ...] = tuple(f"column {c}" for c in self._columns)
        # Learned state: (segment, action) counts and reward sums.
        self._segments: list[str] = []
        self._actions = np.zeros((0, 0))  # (J, k) action-feature rows
        self._count = np.zeros((0, 0))  # (segments, J)
        self._total = np.zeros((0, 0))  # (segments, J)

    def params(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "segment_by": self.segment_by,
            "segment_columns": list(self.segment_columns)
            if self.segment_columns is not None
            else None,
            "prior_count": self.prior_count,
        }

    def set_feature_names(self, names: Sequence[str]) -> None:
        """Find the ``segment_by`` one-hot group among the context column ``names``."""
        if self.segment_columns is not None or not self.segment_by:
            return
        prefix = f"{self.segment_by}="
        hot = [(j, name) for j, name in enumerate(names) if name.startswith(prefix)]
        self._columns = tuple(j for j, _ in hot)
        self._labels = tuple(name for _, name in hot)

    # --- scoring -----------------------------------------------------------------------------

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        contexts, action_features, eligible = self._check(contexts, action_features, eligible)
        values = self._values(contexts, action_features)
        return self._dist(values, eligible)

    def _scores(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        dist: np.ndarray,
    ) -> np.ndarray:
        """The estimated mean reward of each eligible action (NaN elsewhere)."""
        values = self._values(np.asarray(contexts), np.asarray(action_features, np.float64))
        return np.where(eligible, values, np.nan)

    def _dist(self, values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        masked = np.where(eligible, values, -np.inf)
        best = masked == masked.max(axis=1, keepdims=True)
        best &= eligible
        n_best = best.sum(axis=1, keepdims=True)
        n_eligible = eligible.sum(axis=1, keepdims=True)
        dist = np.divide(best, n_best, out=np.zeros(best.shape), where=n_best > 0)
        dist *= 1.0 - self.epsilon
        if self.epsilon > 0.0:
            dist += eligible * (self.epsilon / np.maximum(n_eligible, 1))
        return dist

    def _values(self, contexts: np.ndarray, action_features: np.ndarray) -> np.ndarray:
        """``(n, A)`` shrunken mean reward of each action in each row's segment."""
        n, n_actions = len(contexts), len(action_features)
        if not len(self._segments):
            return np.zeros((n, n_actions))
        m0 = self.prior_count
        count, total = self._count.sum(axis=0), self._total.sum(axis=0)
        overall = total.sum() / max(count.sum(), 1e-300)
        per_action = (total + m0 * overall) / np.maximum(count + m0, 1e-300)  # (J,)
        per_cell = (self._total + m0 * per_action) / np.maximum(self._count + m0, 1e-300)
        # Unknown actions get the overall mean; unknown segments their action's mean.
        index = {row.tobytes(): j for j, row in enumerate(self._actions)}
        known = np.array([index.get(row.tobytes(), -1) for row in action_features], dtype=int)
        table = np.full((len(self._segments) + 1, n_actions), overall)
        table[:-1, known >= 0] = per_cell[:, known[known >= 0]]
        table[-1, known >= 0] = per_action[known[known >= 0]]
        positions = {label: i for i, label in enumerate(self._segments)}
        labels, seg = self._segment_labels(contexts)
        rows = np.array([positions.get(label, len(self._segments)) for label in labels])
        return table[rows[seg]]

    def _segment_labels(self, contexts: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Distinct segment labels of the batch and each row's index into them."""
        if not self._columns:
            return [_GLOBAL], np.zeros(len(contexts), dtype=np.int64)
        if max(self._columns) >= contexts.shape[1]:
            raise ValueError(
                f"egreedy: segment column {max(self._columns)} is outside the "
                f"{contexts.shape[1]} context columns"
            )
        group = np.asarray(contexts)[:, list(self._columns)] > 0
        first = np.where(group.any(axis=1), group.argmax(axis=1), len(self._columns))
        return [*self._labels, _NONE], first

    # --- learning ----------------------------------------------------------------------------

    def update(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
    ) -> None:
        """Add the logged rewards to their (segment, action) cells."""
        x, feats, actions, rewards = check_log(
            "egreedy", contexts, action_features, actions, rewards, propensities
        )
        if not len(actions):
            return
        if len(self._actions) and self._actions.shape[1] != feats.shape[1]:
            raise ValueError(
                f"egreedy: learned on {self._actions.shape[1]} action features, "
                f"got {feats.shape[1]}"
            )
        if not len(self._actions):
            self._actions = np.zeros((0, feats.shape[1]))
            self._count = np.zeros((len(self._segments), 0))
            self._total = np.zeros((len(self._segments), 0))
        index = {row.tobytes(): j for j, row in enumerate(self._actions)}
        column = np.empty(len(feats), dtype=np.int64)
        added: list[np.ndarray] = []
        for a, key in enumerate(feats):
            j = index.setdefault(key.tobytes(), len(index))
            if j >= len(self._actions) + len(added):
                added.append(key)
            column[a] = j
        if added:
            pad = np.zeros((len(self._segments), len(added)))
            self._actions = np.concatenate([self._actions, np.stack(added)])
            self._count = np.concatenate([self._count, pad], axis=1)
            self._total = np.concatenate([self._total, pad], axis=1)
        labels, seg = self._segment_labels(x)
        row = np.array([self._row_of(label) for label in labels], dtype=np.int64)[seg]
        np.add.at(self._count, (row, column[actions]), 1.0)
        np.add.at(self._total, (row, column[actions]), rewards)

    def _row_of(self, label: str) -> int:
        if label not in self._segments:
            self._segments.append(label)
            fresh = np.zeros((1, len(self._actions)))
            self._count = np.concatenate([self._count, fresh])
            self._total = np.concatenate([self._total, fresh])
        return self._segments.index(label)

    # --- state -------------------------------------------------------------------------------

    def _state_payload(self) -> bytes:
        return pack_arrays({"segments": self._segments}, (self._actions, self._count, self._total))

    def _load_payload(self, payload: bytes) -> None:
        meta, (self._actions, self._count, self._total) = unpack_arrays(payload, 3)
        self._segments = list(meta["segments"])

    def _check(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        contexts = np.asarray(contexts)
        action_features = np.asarray(action_features, dtype=np.float64)
        eligible = np.asarray(eligible, dtype=bool)
        check_batch("egreedy", contexts, action_features, eligible)
        return contexts, action_features, eligible
