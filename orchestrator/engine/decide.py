"""One batch of the daily run, as a pure function of arrays.

Stages, in order: target rules → the blocking stages of ``engine.stages.STAGES`` (global control,
open measurement windows, cooldowns, exclusions, frequency caps) → manual priorities → policy →
test/control split. Each blocking stage only removes options; a customer left with none gets no
decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.engine import journeys as jny
from orchestrator.engine.actions import NO_SEND
from orchestrator.engine.hashing import uniform_draw
from orchestrator.engine.stages import STAGE_NAMES, STAGES, BatchInput, RunSetup

__all__ = ["GROUPS", "REASONS", "STAGE_NAMES", "BatchDecisions", "BatchInput", "RunSetup"]

REASON_PRIORITY, REASON_POLICY, REASON_JOURNEY = 1, 2, 3
REASONS = {REASON_PRIORITY: "priority", REASON_POLICY: "policy", REASON_JOURNEY: "journey"}
GROUP_TEST, GROUP_CONTROL = 1, 2
GROUPS = {GROUP_TEST: "test", GROUP_CONTROL: "control"}


@dataclass
class BatchDecisions:
    """Per customer: ``action (n,)`` (-1: no decision), ``campaign (n,)`` (-1: none or send
    nothing), ``group``/``reason`` codes (0: none), ``propensity (n,)``, and for the summary
    ``targeted (n,)`` (some rule matched) and ``suppressed_by (n,)`` (index into ``STAGES`` of
    the stage that removed the last option, -1 if none)."""

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
    contexts: np.ndarray  # (n, d) the policy's view, logged for learning
    eligible: np.ndarray  # (n, A) what remained after every stage (+ "send nothing"), logged
    # Only when asked (orch explain): the masks of each stage and the policy's view.
    stage_masks: dict[str, np.ndarray] = field(default_factory=dict)
    rule_ok: np.ndarray | None = None
    scores: np.ndarray | None = None
    action_dist: np.ndarray | None = None
    batch: BatchInput | None = None  # the input, for the stages' words
    journey: np.ndarray | None = None  # (n,) position in setup.journeys of the step sent, -1
    journey_step: np.ndarray | None = None  # (n,) that step's index
    journey_states: list[Any] | None = None  # per journey, the states after today
    journey_blocked: list[np.ndarray] | None = None  # per journey, due but not sent today

    @property
    def decided(self) -> np.ndarray:
        return self.action >= 0


def decide_batch(setup: RunSetup, batch: BatchInput, *, explain: bool = False) -> BatchDecisions:
    """Decide for every customer of the batch (see the module docstring for the stages).

    Every random choice uses the batch's keyed ``draws``, so a customer's decision is the same
    whichever batch or partition it is decided in."""
    acts, n = setup.actions, batch.n
    n_c = acts.n_campaigns

    rule_ok = np.zeros((n, n_c), dtype=bool)
    for ci, rule in enumerate(setup.rules):
        rule_ok[:, ci] = rule.evaluate(batch.columns, n)

    masks: dict[str, np.ndarray] = {}
    ok = rule_ok.copy()
    targeted = np.asarray(rule_ok.any(axis=1), dtype=bool)
    suppressed_by = np.full(n, -1, dtype=np.int8)
    alive = targeted
    for si, stage in enumerate(STAGES):
        masks[stage.name] = blocked = stage.blocks(setup, batch)
        ok &= ~blocked
        still = np.asarray(ok.any(axis=1), dtype=bool)
        suppressed_by[alive & ~still] = si
        alive = still
    gc = masks["global_control"][:, 0] if n_c else np.zeros(n, dtype=bool)

    # Real actions come first, "send nothing" (if any) last: column blocks, not masks.
    n_a = acts.n_actions
    n_real = n_a - (acts.no_send is not None)
    camp_of = acts.campaign_of[:n_real]
    eligible = np.zeros((n, n_a), dtype=bool)
    eligible[:, :n_real] = ok.take(camp_of, axis=1)

    action = np.full(n, -1, dtype=np.int64)
    propensity = np.zeros(n)
    reason = np.zeros(n, dtype=np.int8)
    scores = np.full((n, n_a), np.nan) if explain else None
    dists = np.zeros((n, n_a)) if explain else None

    # Manual priorities: the eligible prioritized campaign with the lowest number wins; the
    # policy then picks among that campaign's treatments only.
    ranked = np.flatnonzero(np.isfinite(acts.priority))
    by_priority = np.zeros(n, dtype=bool)
    best_priority = np.full(n, np.inf)
    if len(ranked):
        prio = np.where(ok[:, ranked], acts.priority[ranked][None, :], np.inf)
        best_priority = prio.min(axis=1)
        by_priority = np.isfinite(best_priority)

    # Journeys: a due step goes ahead of the priorities ranked below its journey and of the
    # policy (engine/journeys.py says what blocks it).
    j_sent = np.full(n, -1, dtype=np.int64)
    j_step = np.full(n, -1, dtype=np.int64)
    j_group = np.zeros(n, dtype=np.int8)
    j_share = np.ones(n)
    states: list[Any] | None = None
    blocked_out: list[np.ndarray] | None = None
    if setup.journeys and batch.journeys is not None:
        plan = jny.JourneyPick.of(setup, batch, masks, best_priority)
        states, blocked_out = plan.states, plan.blocked
        rows = np.flatnonzero(plan.journey >= 0)
        by_priority[rows] = False
        j_sent[rows], j_step[rows] = plan.journey[rows], plan.step[rows]
        j_group[rows], j_share[rows] = plan.group[rows], plan.share[rows]
        fixed = rows[plan.action[rows] >= 0]
        action[fixed], propensity[fixed] = plan.action[fixed], 1.0
        free = rows[plan.action[rows] < 0]  # the policy picks among the step's treatments
        if len(free):
            allowed = np.zeros((len(free), n_a), dtype=bool)
            allowed[:, :n_real] = camp_of[None, :] == plan.campaign[free][:, None]
            choice = setup.policy.choose(
                batch.contexts[free], acts.features, allowed, batch.draws.take(free)
            )
            action[free], propensity[free] = choice.action, choice.propensity
        reason[rows] = REASON_JOURNEY
    in_journey = j_sent >= 0

    if by_priority.any():
        rows = np.flatnonzero(by_priority)
        chosen_c = ranked[prio[rows].argmin(axis=1)]
        allowed = np.zeros((len(rows), n_a), dtype=bool)
        allowed[:, :n_real] = camp_of[None, :] == chosen_c[:, None]
        choice = setup.policy.choose(
            batch.contexts[rows], acts.features, allowed, batch.draws.take(rows)
        )
        action[rows], propensity[rows] = choice.action, choice.propensity
        reason[rows] = REASON_PRIORITY
        if explain:
            scores[rows], dists[rows] = choice.scores, choice.action_dist  # type: ignore[index]

    any_option = alive
    if acts.no_send is not None:
        eligible[:, acts.no_send] = any_option
    by_policy = ~by_priority & any_option & ~in_journey
    if by_policy.any():
        rows = np.flatnonzero(by_policy)
        allowed = eligible[rows]
        choice = setup.policy.choose(
            batch.contexts[rows], acts.features, allowed, batch.draws.take(rows)
        )
        action[rows], propensity[rows] = choice.action, choice.propensity
        reason[rows] = REASON_POLICY
        if explain:
            scores[rows], dists[rows] = choice.scores, choice.action_dist  # type: ignore[index]

    decided = action >= 0
    campaign = np.where(decided, acts.campaign_of[np.maximum(action, 0)], -1)
    has_campaign = campaign >= 0
    group = np.where(decided, GROUP_TEST, 0).astype(np.int8)
    share = np.ones(n)
    split = has_campaign & ~in_journey  # a journey's split was drawn at its entry
    if in_journey.any():
        rows = np.flatnonzero(in_journey)
        group[rows] = np.where(j_group[rows] == jny.CONTROL, GROUP_CONTROL, GROUP_TEST)
        share[rows] = j_share[rows]
        propensity[rows] *= share[rows]
        if states is not None:
            jny.after_sending(setup.journeys, states, j_sent, rows[action[rows] >= 0])
    if split.any():
        rows = np.flatnonzero(split)
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
        contexts=batch.contexts,
        eligible=eligible,
        stage_masks=masks if explain else {},
        rule_ok=rule_ok if explain else None,
        scores=scores,
        action_dist=dists,
        batch=batch if explain else None,
        journey=j_sent,
        journey_step=j_step,
        journey_states=states,
        journey_blocked=blocked_out,
    )
