"""The actions of a run date: every (campaign, treatment) pair of the live campaigns, as arrays.

Shapes: ``C`` live campaigns, ``A`` actions (the last one is "send nothing" when the plan allows
it), ``k`` action features.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from orchestrator.engine.hashing import label_key
from orchestrator.plan import CampaignSpec, Plan

NO_SEND = -1  # campaign index of the "send nothing" action
NO_SEND_LABEL = "(send nothing)"
ACTION_FEATURE_DIM = 64


def hash_features(named: dict[str, float], dim: int = ACTION_FEATURE_DIM) -> np.ndarray:
    """Signed feature hashing of ``{name: value}`` into ``(dim,)``: the same name always lands
    in the same column, so models keep their meaning when campaigns come and go.

    Each name goes to two columns (value / sqrt 2 in each), so two actions rarely collide on
    every column.

    >>> v = hash_features({"campaign=birthday": 1.0})
    >>> v.shape, int((v != 0).sum()), round(float((v**2).sum()), 9)
    ((64,), 2, 1.0)
    """
    out = np.zeros(dim)
    half = 1.0 / np.sqrt(2.0)
    for name, value in named.items():
        digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
        for part in (digest[:8], digest[8:]):
            h = int.from_bytes(part, "little")
            out[h % dim] += (value if (h >> 63) & 1 else -value) * half
    return out


def is_live(campaign: CampaignSpec, day: date) -> bool:
    """Active, and ``day`` within its start/end dates (inclusive)."""
    return (
        campaign.status == "active"
        and (campaign.start is None or campaign.start <= day)
        and (campaign.end is None or day <= campaign.end)
    )


@dataclass(frozen=True)
class ActionSet:
    """Campaign and action arrays for one run date."""

    campaigns: tuple[CampaignSpec, ...]  # (C,)
    campaign_of: np.ndarray  # (A,) campaign index, NO_SEND for "send nothing"
    treatment_ids: tuple[str | None, ...]  # (A,)
    cost: np.ndarray  # (A,)
    features: np.ndarray  # (A, ACTION_FEATURE_DIM), hashed: stable across days and plans
    channels: tuple[str, ...]  # distinct channels of the live campaigns
    channel_of: np.ndarray  # (C,) index into channels
    priority: np.ndarray  # (C,) float, inf where the policy decides
    measured: np.ndarray  # (C,) bool
    control_fraction: np.ndarray  # (C,)
    measurement_days: np.ndarray  # (C,) int
    cooldown_days: np.ndarray  # (C,) int
    campaign_keys: np.ndarray  # (C,) uint64 for test/control hashing
    no_send: int | None  # index of the "send nothing" action
    no_send_days: int = 7  # outcome window of a "send nothing" decision

    @property
    def n_actions(self) -> int:
        return len(self.treatment_ids)

    @property
    def n_campaigns(self) -> int:
        return len(self.campaigns)

    @property
    def campaign_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.campaigns)

    def label(self, action: int) -> str:
        """``campaign/treatment``, or ``(send nothing)``."""
        c = int(self.campaign_of[action])
        if c == NO_SEND:
            return NO_SEND_LABEL
        return f"{self.campaigns[c].id}/{self.treatment_ids[action]}"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.label(a) for a in range(self.n_actions))


def named_features(campaign_id: str, channel: str, features: dict[str, Any]) -> dict[str, float]:
    """What a policy sees of a treatment, before hashing: campaign, channel, its features."""
    named: dict[str, float] = {f"campaign={campaign_id}": 1.0, f"channel={channel}": 1.0}
    for key, value in features.items():
        if isinstance(value, bool | int | float):
            named[key] = float(value)
        else:
            named[f"{key}={value}"] = 1.0
    return named


NO_SEND_FEATURES = {"no_send": 1.0}


def build_actions(plan: Plan, day: date) -> ActionSet:
    """The live campaigns of ``day`` and their actions, in plan order.

    >>> from orchestrator.plan import Plan
    >>> p = Plan(campaigns=[
    ...     {"id": "a", "channel": "email", "treatments": [{"id": "x"}, {"id": "y"}]}
    ... ])
    >>> acts = build_actions(p, date(2026, 1, 1))
    >>> [acts.label(i) for i in range(acts.n_actions)]
    ['a/x', 'a/y', '(send nothing)']
    """
    live = tuple(c for c in plan.campaigns if is_live(c, day))
    campaign_of: list[int] = []
    treatments: list[str | None] = []
    cost: list[float] = []
    raw: list[dict[str, float]] = []
    channels = tuple(dict.fromkeys(c.channel for c in live))
    for ci, camp in enumerate(live):
        for t in camp.treatments:
            campaign_of.append(ci)
            treatments.append(t.id)
            cost.append(t.cost)
            raw.append(named_features(camp.id, camp.channel, t.features))
    no_send = None
    if plan.settings.allow_no_send and live:
        no_send = len(campaign_of)
        campaign_of.append(NO_SEND)
        treatments.append(None)
        cost.append(0.0)
        raw.append(NO_SEND_FEATURES)
    features = (
        np.stack([hash_features(feats) for feats in raw])
        if raw
        else np.zeros((0, ACTION_FEATURE_DIM))
    )
    return ActionSet(
        campaigns=live,
        campaign_of=np.asarray(campaign_of, dtype=np.int64),
        treatment_ids=tuple(treatments),
        cost=np.asarray(cost, dtype=np.float64),
        features=features,
        channels=channels,
        channel_of=np.asarray([channels.index(c.channel) for c in live], dtype=np.int64),
        priority=np.asarray(
            [c.priority if c.priority is not None else np.inf for c in live], dtype=np.float64
        ),
        measured=np.asarray([c.measured for c in live], dtype=bool),
        control_fraction=np.asarray([c.control_fraction for c in live], dtype=np.float64),
        measurement_days=np.asarray([c.measurement_days for c in live], dtype=np.int64),
        cooldown_days=np.asarray([c.cooldown_days for c in live], dtype=np.int64),
        campaign_keys=np.asarray([label_key(c.id) for c in live], dtype=np.uint64),
        no_send=no_send,
        no_send_days=plan.settings.no_send_measurement_days,
    )
