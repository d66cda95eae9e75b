"""One batch of the daily run, as a pure function of arrays.

Stages, in order: target rules → global control → open measurement windows → cooldowns →
exclusions → frequency caps → manual priorities → policy → test/control split. Each stage only
removes options; a customer left with none gets no decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from orchestrator.engine.actions import NO_SEND, ActionSet
from orchestrator.engine.hashing import in_global_control, uniform_draw
from orchestrator.engine.history import (
    History,
    cap_blocks,
    cooldown_blocks,
    exclusion_blocks,
    open_windows,
)
from orchestrator.plan import CapSpec, ExclusionSpec
from policies.base import Policy

STAGES = ("global_control", "window", "cooldown", "exclusion", "cap")
REASON_PRIORITY, REASON_POLICY = 1, 2
REASONS = {REASON_PRIORITY: "priority", REASON_POLICY: "policy"}
GROUP_TEST, GROUP_CONTROL = 1, 2
GROUPS = {GROUP_TEST: "test", GROUP_CONTROL: "control"}


@dataclass(frozen=True)
class RunSetup:
    """Everything about a run date that is the same for every batch."""

    day: date
    actions: ActionSet
    rules: Sequence[Any]  # (C,) compiled target rules with .evaluate(columns, n)
    caps: Sequence[CapSpec]
    exclusions: Sequence[ExclusionSpec]
    global_control_fraction: float
    policy: Policy


@dataclass(frozen=True)
class BatchInput:
    """One batch of customers: ``keys (n,)`` uint64, ``contexts (n, d)``, rule ``columns``."""

    keys: np.ndarray
    columns: Any
    contexts: np.ndarray
    history: History

    @property
    def n(self) -> int:
        return len(self.keys)


@dataclass
class BatchDecisions:
    """Per customer: ``action (n,)`` (-1: no decision), ``campaign (n,)`` (-1: none or send
    nothing), ``group``/``reason`` codes (0: none), ``propensity (n,)``, and for the summary
    ``targeted (n,)`` (some rule matched) and ``suppressed_by (n,)`` (stage index that removed
    the last option, -1 if none)."""

    action: np.ndarray
    campaign: np.ndarray
    group: np.ndarray
    reason: np.ndarray
    propensity: np.ndarray
    split_share: np.ndarray
    targeted: np.ndarray
    suppressed_by: np.ndarray
    window_days: np.ndarray
    in_global_control: np.ndarray
    window_left: np.ndarray
    contexts: np.ndarray  # (n, d) the policy's view, logged for learning
    eligible: np.ndarray  # (n, A) what remained after every stage (+ "send nothing"), logged
    # Only when asked (orch explain): the masks of each stage and the policy's view.
    stage_masks: dict[str, np.ndarray] = field(default_factory=dict)
    rule_ok: np.ndarray | None = None
    scores: np.ndarray | None = None
    action_dist: np.ndarray | None = None

    @property
    def decided(self) -> np.ndarray:
        return self.action >= 0


def decide_batch(
    setup: RunSetup, batch: BatchInput, rng: np.random.Generator, *, explain: bool = False
) -> BatchDecisions:
    """Decide for every customer of the batch (see the module docstring for the stages)."""
    acts, n, hist = setup.actions, batch.n, batch.history
    n_c = acts.n_campaigns

    rule_ok = np.zeros((n, n_c), dtype=bool)
    for ci, rule in enumerate(setup.rules):
        rule_ok[:, ci] = rule.evaluate(batch.columns, n)

    gc = in_global_control(batch.keys, setup.global_control_fraction)
    window_open, window_left = open_windows(hist, n)
    cap_global, cap_campaign = cap_blocks(hist, n, setup.caps, acts)
    masks = {
        "global_control": np.broadcast_to(gc[:, None], (n, n_c)),
        "window": window_open[:, None] & acts.measured[None, :],
        "cooldown": cooldown_blocks(hist, n, acts),
        "exclusion": exclusion_blocks(hist, n, setup.exclusions, acts),
        "cap": cap_campaign | cap_global[:, None],
    }
    ok = rule_ok.copy()
    targeted = np.asarray(rule_ok.any(axis=1), dtype=bool)
    suppressed_by = np.full(n, -1, dtype=np.int8)
    for si, stage in enumerate(STAGES):
        before = ok.any(axis=1)
        ok &= ~masks[stage]
        suppressed_by[before & ~ok.any(axis=1)] = si

    n_a = acts.n_actions
    real = acts.campaign_of >= 0
    eligible = np.zeros((n, n_a), dtype=bool)
    eligible[:, real] = ok[:, acts.campaign_of[real]]

    action = np.full(n, -1, dtype=np.int64)
    propensity = np.zeros(n)
    reason = np.zeros(n, dtype=np.int8)
    scores = np.full((n, n_a), np.nan) if explain else None
    dists = np.zeros((n, n_a)) if explain else None

    # Manual priorities: the eligible prioritized campaign with the lowest number wins; the
    # policy then picks among that campaign's treatments only.
    prio = np.where(ok, acts.priority[None, :], np.inf)
    best = prio.min(axis=1) if n_c else np.full(n, np.inf)
    by_priority = np.isfinite(best)
    if by_priority.any():
        rows = np.flatnonzero(by_priority)
        chosen_c = prio[rows].argmin(axis=1)
        allowed = np.zeros((len(rows), n_a), dtype=bool)
        allowed[:, real] = acts.campaign_of[real][None, :] == chosen_c[:, None]
        choice = setup.policy.choose(batch.contexts[rows], acts.features, allowed, rng)
        action[rows], propensity[rows] = choice.action, choice.propensity
        reason[rows] = REASON_PRIORITY
        if explain:
            scores[rows], dists[rows] = choice.scores, choice.action_dist  # type: ignore[index]

    if acts.no_send is not None:
        eligible[:, acts.no_send] = eligible.any(axis=1)
    by_policy = ~by_priority & eligible.any(axis=1)
    if by_policy.any():
        rows = np.flatnonzero(by_policy)
        allowed = eligible[rows]
        choice = setup.policy.choose(batch.contexts[rows], acts.features, allowed, rng)
        action[rows], propensity[rows] = choice.action, choice.propensity
        reason[rows] = REASON_POLICY
        if explain:
            scores[rows], dists[rows] = choice.scores, choice.action_dist  # type: ignore[index]

    decided = action >= 0
    campaign = np.where(decided, acts.campaign_of[np.maximum(action, 0)], -1)
    has_campaign = campaign >= 0
    group = np.where(decided, GROUP_TEST, 0).astype(np.int8)
    share = np.ones(n)
    if has_campaign.any():
        rows = np.flatnonzero(has_campaign)
        cf = acts.control_fraction[campaign[rows]]
        control = uniform_draw(batch.keys[rows], acts.campaign_keys[campaign[rows]]) < cf
        group[rows[control]] = GROUP_CONTROL
        share[rows] = np.where(control, cf, 1.0 - cf)
        propensity[rows] *= share[rows]
    window_days = np.where(
        has_campaign,
        acts.measurement_days[np.maximum(campaign, 0)],
        np.where(decided, acts.no_send_days, 0),
    )

    return BatchDecisions(
        action=action,
        campaign=np.where(campaign == NO_SEND, -1, campaign),
        group=group,
        reason=reason,
        propensity=propensity,
        split_share=share,
        targeted=targeted,
        suppressed_by=suppressed_by,
        window_days=window_days,
        in_global_control=gc,
        window_left=window_left,
        contexts=batch.contexts,
        eligible=eligible,
        stage_masks=masks if explain else {},
        rule_ok=rule_ok if explain else None,
        scores=scores,
        action_dist=dists,
    )
