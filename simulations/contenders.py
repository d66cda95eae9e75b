"""The contenders of a simulation that only a simulation can have: the oracle and one fixed action.

They are ordinary policies behind the batch interface, so the engine runs them through the same
stages as any other (rules, global control, windows, cooldowns, exclusions, caps, priorities,
test/control): the oracle is "the true best action under the same rules". They need the world,
which no plan can carry, so a plan names a live world by a token (``params: {world: TOKEN}``)
registered here by the loop, and the oracle finds each customer's row in the world through a
numeric attribute (``ROW_ATTRIBUTE``) imported only into the oracle's own database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from orchestrator.engine.actions import NO_SEND_FEATURES, hash_features, named_features
from orchestrator.plan import Plan
from policies import POLICIES
from policies.base import Policy

ROW_ATTRIBUTE = "sim_row"
NO_SEND_ROW = hash_features(NO_SEND_FEATURES)


@dataclass
class Live:
    """A world being simulated, the day it is at, and its action labels by feature row."""

    world: Any  # simulations.world.World
    day: date
    label_of_row: dict[bytes, str]


_LIVE: dict[str, Live] = {}


def action_rows(plan: Plan) -> dict[bytes, str]:
    """Each treatment's hashed feature row (as the engine builds it) → ``campaign/treatment``."""
    out = {}
    for camp in plan.campaigns:
        for t in camp.treatments:
            row = hash_features(named_features(camp.id, camp.channel, t.features))
            out[row.tobytes()] = f"{camp.id}/{t.id}"
    return out


def register_world(token: str, world: Any, plan: Plan, day: date) -> Live:
    """Make ``world`` reachable by ``token`` for the contenders, and them reachable by name."""
    POLICIES.setdefault(OraclePolicy.name, OraclePolicy)
    POLICIES.setdefault(FixedPolicy.name, FixedPolicy)
    live = Live(world, day, action_rows(plan))
    _LIVE[token] = live
    return live


def unregister_world(token: str) -> None:
    _LIVE.pop(token, None)


def _live(token: str) -> Live:
    try:
        return _LIVE[token]
    except KeyError:
        raise ValueError(f"no simulated world {token!r} is running") from None


def _one_hot(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """``(n, A)`` one-hot on each row's best eligible value (first on ties; none if none)."""
    masked = np.where(eligible, values, -np.inf)
    dist = np.zeros(eligible.shape)
    has = eligible.any(axis=1)
    dist[np.flatnonzero(has), masked[has].argmax(axis=1)] = 1.0
    return dist


class OraclePolicy(Policy):
    """The action of the highest true expected incremental value among the eligible ones."""

    name = "oracle"
    learns = False

    def __init__(self, *, world: str = "") -> None:
        self.world = world
        self._row_col: int | None = None

    def params(self) -> dict[str, Any]:
        return {"world": self.world}

    def set_feature_names(self, names: Any) -> None:
        names = list(names)
        self._row_col = names.index(ROW_ATTRIBUTE) if ROW_ATTRIBUTE in names else None

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        live = _live(self.world)
        if self._row_col is None:
            raise ValueError(f"oracle: the contexts have no {ROW_ATTRIBUTE!r} column")
        rows = np.asarray(contexts)[:, self._row_col].astype(np.int64)
        feats = np.asarray(action_features, dtype=np.float64)
        labels = [live.label_of_row.get(r.tobytes()) for r in feats]
        known = [j for j, lb in enumerate(labels) if lb is not None]
        values = np.zeros(np.shape(eligible))  # "send nothing" (and anything unknown): 0
        if known and len(rows):
            values[:, known] = live.world.expected_incremental(
                live.day, rows, [labels[j] for j in known]
            )
        return _one_hot(values, np.asarray(eligible, dtype=bool))


class FixedPolicy(Policy):
    """Always ``label`` where it is eligible; otherwise "send nothing" (else uniform)."""

    name = "fixed"
    learns = False
    uses_context = False

    def __init__(self, *, world: str = "", label: str = "") -> None:
        self.world = world
        self.label = label

    def params(self) -> dict[str, Any]:
        return {"world": self.world, "label": self.label}

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        live = _live(self.world)
        eligible = np.asarray(eligible, dtype=bool)
        feats = np.asarray(action_features, dtype=np.float64)
        score = np.array(
            [
                2.0
                if live.label_of_row.get(r.tobytes()) == self.label
                else 1.0
                if np.array_equal(r, NO_SEND_ROW)
                else 0.0
                for r in feats
            ]
        )
        best = _one_hot(np.broadcast_to(score, eligible.shape), eligible)
        # Rows where only other campaigns are eligible (e.g. a manual priority): uniform.
        other = eligible.any(axis=1) & (np.where(eligible, score, 0.0).max(axis=1) == 0.0)
        if other.any():
            counts = eligible[other].sum(axis=1, keepdims=True)
            best[other] = eligible[other] / counts
        return best
