"""The batch interface every policy implements, and its versioned state envelope.

Shapes: ``n`` customers, ``A`` actions, ``d`` customer features, ``k`` action features.
``contexts (n, d)`` float, ``action_features (A, k)`` float, ``eligible (n, A)`` bool.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from orchestrator.engine.hashing import Draws
from orchestrator.errors import StateVersionError

_MAGIC = b"ORCHPOL1"


@dataclass(frozen=True)
class Choice:
    """A policy's choice for a batch.

    ``action (n,)`` index of the chosen action, -1 where nothing was eligible;
    ``propensity (n,)`` probability the policy gave that action (0 where -1);
    ``scores (n, A)`` the policy's scores (NaN where not eligible), for `orch explain`;
    ``action_dist (n, A)`` the probabilities the choice was sampled from.
    """

    action: np.ndarray
    propensity: np.ndarray
    scores: np.ndarray
    action_dist: np.ndarray


class Policy(ABC):
    """A batch policy: choose among the eligible actions, learn from logged rewards."""

    name: ClassVar[str]
    state_version: ClassVar[int] = 1
    uses_context: ClassVar[bool] = True  # False: the run skips building contexts
    learns: ClassVar[bool] = True  # False: ``update`` learns nothing (no cold start needed)

    @abstractmethod
    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        """Return ``(n, A)`` probabilities, zero outside ``eligible``, rows summing to 1."""

    def scores(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        """Return ``(n, A)`` scores (higher is better), NaN outside ``eligible``."""
        return self._scores(
            contexts,
            action_features,
            eligible,
            self.action_dist(contexts, action_features, eligible),
        )

    def _scores(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        dist: np.ndarray,
    ) -> np.ndarray:
        """Scores given the distribution already computed; by default the probabilities."""
        del contexts, action_features
        return np.where(eligible, dist, np.nan)

    def choose(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        eligible: np.ndarray,
        draws: Draws,
    ) -> Choice:
        """Sample one eligible action per row from ``action_dist`` with the row's ``draws``
        (keyed per customer, so a customer's choice does not depend on the rest of the batch)."""
        eligible = np.asarray(eligible, dtype=bool)
        dist = self.action_dist(contexts, action_features, eligible)
        action, propensity = sample_rows(dist, eligible, draws)
        scores = self._scores(contexts, action_features, eligible, dist)
        return Choice(action, propensity, scores, dist)

    def update(  # noqa: B027 - learning is optional: the default learns nothing
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
    ) -> None:
        """Learn from logged ``(context, action, reward, propensity)``."""

    @classmethod
    def params_from_rewards(cls, rewards: np.ndarray) -> dict[str, Any]:
        """Constructor arguments a first version derives from its first rewards ``(n,)`` (the
        learning loop fixes them then, unless the plan sets them); default: none."""
        del rewards
        return {}

    def set_feature_names(self, names: Sequence[str]) -> None:
        """Tell the policy what its context columns are (the engine calls it); default: ignore."""
        del names

    # --- state -----------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the policy."""
        return {}

    def _state_payload(self) -> bytes:
        return b""

    def _load_payload(self, payload: bytes) -> None:
        del payload

    def get_state(self) -> bytes:
        """Learned state as versioned bytes (stored in ``policy_version.state``)."""
        header = json.dumps(
            {"kind": self.name, "version": self.state_version, "params": self.params()}
        ).encode()
        return _MAGIC + len(header).to_bytes(4, "big") + header + self._state_payload()

    def set_state(self, state: bytes) -> None:
        """Restore state written by ``get_state``; refuse another kind or a newer version."""
        if not state.startswith(_MAGIC):
            raise StateVersionError("not a policy state written by orch")
        size = int.from_bytes(state[8:12], "big")
        header = json.loads(state[12 : 12 + size])
        if header["kind"] != self.name:
            raise StateVersionError(
                f"state of a {header['kind']!r} policy cannot load into {self.name!r}"
            )
        if header["version"] > self.state_version:
            raise StateVersionError(
                f"{self.name!r} state version {header['version']} is newer than this orch "
                f"understands ({self.state_version}): upgrade orch"
            )
        self._load_payload(state[12 + size :])


def pack_arrays(meta: dict[str, Any], arrays: Sequence[np.ndarray]) -> bytes:
    """Learned state as bytes: a JSON header, then numpy arrays (no pickle).

    >>> meta, arrays = unpack_arrays(pack_arrays({"n": 2}, [np.arange(3)]), 1)
    >>> meta, arrays[0].tolist()
    ({'n': 2}, [0, 1, 2])
    """
    out = io.BytesIO()
    head = json.dumps(meta).encode()
    out.write(len(head).to_bytes(4, "big") + head)
    for array in arrays:
        np.save(out, array, allow_pickle=False)
    return out.getvalue()


def unpack_arrays(payload: bytes, count: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Read back what ``pack_arrays`` wrote: the header and ``count`` arrays."""
    size = int.from_bytes(payload[:4], "big")
    meta = json.loads(payload[4 : 4 + size])
    stream = io.BytesIO(payload[4 + size :])
    return meta, [np.load(stream, allow_pickle=False) for _ in range(count)]


def sample_rows(
    dist: np.ndarray, eligible: np.ndarray, draws: Draws, stream: str = "sample"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one column per row of ``dist`` (n, A) by inverse CDF with each row's ``draws``;
    -1 for rows with no option.

    >>> d = np.array([[0.0, 1.0], [0.0, 0.0]])
    >>> a, p = sample_rows(d, d > 0, Draws.seeded(2))
    >>> a.tolist(), p.tolist()
    ([1, -1], [1.0, 0.0])
    """
    n, n_actions = dist.shape
    has_any = eligible.any(axis=1)
    cdf = np.cumsum(dist, axis=1)
    u = draws.uniform(stream) * cdf[:, -1]
    action = (cdf <= u[:, None]).sum(axis=1)
    action = np.minimum(action, n_actions - 1)
    # Guard against float round-off landing on a zero-probability column.
    bad = ~eligible[np.arange(n), action] & has_any
    if bad.any():
        action[bad] = np.argmax(np.where(eligible[bad], dist[bad], -1.0), axis=1)
    action = np.where(has_any, action, -1)
    propensity = np.where(has_any, dist[np.arange(n), np.maximum(action, 0)], 0.0)
    return action.astype(np.int64), propensity


def check_batch(
    who: str, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
) -> None:
    """Shapes of a scoring call (shared by the learning policies)."""
    if contexts.ndim != 2 or action_features.ndim != 2 or eligible.ndim != 2:
        raise ValueError(
            f"{who}: contexts (n, d), action_features (A, k) and eligible (n, A) must be 2-D"
        )
    if eligible.shape != (len(contexts), len(action_features)):
        raise ValueError(
            f"{who}: eligible has shape {eligible.shape}, expected "
            f"{(len(contexts), len(action_features))}"
        )
    if not np.isfinite(action_features).all():
        raise ValueError(f"{who}: action_features must be finite")


def check_log(
    who: str,
    contexts: np.ndarray,
    action_features: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shapes and values of a logged batch: ``(contexts, action_features, actions, rewards)``
    as float64, float64, int64, float64."""
    x = np.asarray(contexts, dtype=np.float64)
    feats = np.asarray(action_features, dtype=np.float64)
    actions = np.asarray(actions)
    rewards = np.asarray(rewards, dtype=np.float64)
    propensities = np.asarray(propensities, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or feats.ndim != 2:
        raise ValueError(f"{who}: contexts (n, d) and action_features (A, k) must be 2-D")
    for label, array in (
        ("actions", actions),
        ("rewards", rewards),
        ("propensities", propensities),
    ):
        if array.shape != (n,):
            raise ValueError(f"{who}: {label} has shape {array.shape}, expected ({n},)")
    if n and (actions.min() < 0 or actions.max() >= len(feats)):
        raise ValueError(f"{who}: actions must index action_features (0..{len(feats) - 1})")
    if not (np.isfinite(rewards).all() and np.isfinite(x).all() and np.isfinite(feats).all()):
        raise ValueError(f"{who}: rewards, contexts and action_features must be finite")
    if n and not ((propensities > 0) & (propensities <= 1)).all():
        raise ValueError(f"{who}: propensities must be in (0, 1]")
    return x, feats, actions.astype(np.int64), rewards


def uniform_over(eligible: np.ndarray) -> np.ndarray:
    """``(n, A)``: each row uniform over its eligible actions (zeros where none is)."""
    eligible = np.asarray(eligible, dtype=bool)
    counts = eligible.sum(axis=1, keepdims=True)
    return np.divide(eligible, counts, out=np.zeros(eligible.shape), where=counts > 0)
