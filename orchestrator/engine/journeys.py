"""Journeys in the decision core: who enters, who leaves, and which step is due today.

A journey (``JourneySpec`` in the plan) is a time-bound flow: a customer enters on an event
(``signup``, ``cart_abandoned``) or when a rule becomes true, gets its steps at their day offsets,
and leaves on an exit event or rule, or after the last step. The core keeps, per customer and
journey, a small state (``JourneyState``: entered on, next step, test or control, status) that
the run stores in ``journey_state`` with the decisions.

Each day, per journey, in this order: exits (the journey ends the day the exit is seen), entries
(the journey's own test/control split is drawn at entry, keyed on customer and journey, so the
whole journey is held out for control customers), then the due step. A due step is blocked by
the global control group, and, unless the journey is ``cap_exempt``, by frequency caps and by
measurement windows of campaigns outside the journey (the journey's own windows do not block its
next step); it also yields to a manual priority ranked above the journey. A blocked step waits
(``when_blocked: defer``, up to ``defer_days``) or is skipped. A step whose campaign is not live
is skipped. Steps of a journey are never sent twice and never after its exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from orchestrator.engine.actions import ActionSet
from orchestrator.engine.hashing import label_key, uniform_draw
from orchestrator.engine.history import History
from orchestrator.plan import JourneySpec, ReentryAfter

NONE, ACTIVE, EXITED, COMPLETED = 0, 1, 2, 3
STATUS = {NONE: "none", ACTIVE: "active", EXITED: "exited", COMPLETED: "completed"}
STATUS_CODE = {v: k for k, v in STATUS.items()}
TEST, CONTROL = 1, 2
NEVER = 10**9  # re-entry "never", in days


@dataclass(frozen=True)
class JourneyPlan:
    """One live journey as arrays over its ``S`` steps, for a run date."""

    spec: JourneySpec
    index: int  # position in the plan's journeys
    step_days: np.ndarray  # (S,)
    step_campaign: np.ndarray  # (S,) live campaign index, -1 when the campaign is not live
    step_action: np.ndarray  # (S,) action index of the step's treatment, -1: the policy picks
    step_defer: np.ndarray  # (S,) bool: a blocked step waits (else it is skipped)
    campaigns: np.ndarray  # (C,) bool: the live campaigns the journey uses
    priority: float  # -inf: ahead of every manual priority
    reentry_days: int
    key: np.uint64

    @property
    def id(self) -> str:
        return self.spec.id


def journey_plans(journeys: list[JourneySpec], actions: ActionSet) -> tuple[JourneyPlan, ...]:
    """The active journeys of the plan, resolved against the run date's live actions."""
    live = {cid: i for i, cid in enumerate(actions.campaign_ids)}
    out = []
    for index, spec in enumerate(journeys):
        if spec.status != "active":
            continue
        camp = np.array([live.get(s.campaign, -1) for s in spec.steps], dtype=np.int64)
        act = np.full(len(spec.steps), -1, dtype=np.int64)
        for k, step in enumerate(spec.steps):
            if step.treatment is not None and camp[k] >= 0:
                hits = np.flatnonzero(
                    (actions.campaign_of == camp[k])
                    & (np.array(actions.treatment_ids, dtype=object) == step.treatment)
                )
                act[k] = int(hits[0]) if len(hits) else -1
                if not len(hits):
                    camp[k] = -1  # the treatment is retired: the step cannot be sent
        used = np.zeros(actions.n_campaigns, dtype=bool)
        used[camp[camp >= 0]] = True
        reentry = spec.reentry.after_days if isinstance(spec.reentry, ReentryAfter) else NEVER
        out.append(
            JourneyPlan(
                spec=spec,
                index=index,
                step_days=np.array([s.day for s in spec.steps], dtype=np.int64),
                step_campaign=camp,
                step_action=act,
                step_defer=np.array([s.when_blocked == "defer" for s in spec.steps]),
                campaigns=used,
                priority=float(spec.priority) if spec.priority is not None else -np.inf,
                reentry_days=reentry,
                key=label_key("__journey__:" + spec.id),
            )
        )
    return tuple(out)


@dataclass
class JourneyState:
    """Per customer of a batch and journey: ``status`` code, ``entered`` (day ordinal, -1),
    ``step`` (the next step's index), ``group`` (TEST/CONTROL, 0 before any entry) and
    ``entries`` (how many times the customer entered). Arrays ``(n,)``."""

    status: np.ndarray
    entered: np.ndarray
    step: np.ndarray
    group: np.ndarray
    entries: np.ndarray

    @classmethod
    def empty(cls, n: int) -> JourneyState:
        z = np.zeros(n, dtype=np.int64)
        return cls(z.copy(), np.full(n, -1, dtype=np.int64), z.copy(), z.copy(), z.copy())

    def copy(self) -> JourneyState:
        return JourneyState(
            self.status.copy(),
            self.entered.copy(),
            self.step.copy(),
            self.group.copy(),
            self.entries.copy(),
        )

    def changed(self, other: JourneyState) -> np.ndarray:
        """``(n,)`` bool: rows that differ from ``other``."""
        return (
            (self.status != other.status)
            | (self.entered != other.entered)
            | (self.step != other.step)
            | (self.group != other.group)
            | (self.entries != other.entries)
        )


@dataclass
class JourneyInput:
    """What the run knows of a batch's journeys: the state before today, and per journey the
    last entry and exit event days (ordinals, -1: none) and rule results (None: not a rule)."""

    states: list[JourneyState]
    entry_event: list[np.ndarray]
    exit_event: list[np.ndarray]
    entry_rule: list[np.ndarray | None] = field(default_factory=list)
    exit_rule: list[np.ndarray | None] = field(default_factory=list)


@dataclass
class JourneyDue:
    """The step each customer is due today (journey position -1: none)."""

    journey: np.ndarray  # (n,) index into the run's JourneyPlan tuple, -1
    step: np.ndarray  # (n,)
    campaign: np.ndarray  # (n,) live campaign index of the step
    action: np.ndarray  # (n,) action of the step's treatment, -1: the policy picks
    group: np.ndarray  # (n,) TEST / CONTROL
    share: np.ndarray  # (n,) the journey split's share of the customer's group


def advance(
    plans: tuple[JourneyPlan, ...],
    inp: JourneyInput,
    keys: np.ndarray,
    day: date,
) -> list[JourneyState]:
    """Exits, then entries, then expired steps, for every journey; the states before sending."""
    today = day.toordinal()
    out = []
    for j, jp in enumerate(plans):
        st = inp.states[j].copy()
        active = st.status == ACTIVE
        left = inp.exit_event[j] >= np.maximum(st.entered, 0)
        rule = inp.exit_rule[j] if j < len(inp.exit_rule) else None
        if rule is not None:
            left |= rule
        st.status[active & left] = EXITED
        # Entries: never in, or back in after ``reentry_days`` counted from the last entry, on
        # an entry event seen since that entry (or the rule).
        can = (st.status != ACTIVE) & ((st.entries == 0) | (today - st.entered >= jp.reentry_days))
        fresh = (inp.entry_event[j] >= 0) & (inp.entry_event[j] > st.entered)
        fresh &= inp.entry_event[j] >= today - jp.spec.entry_within_days
        rule = inp.entry_rule[j] if j < len(inp.entry_rule) else None
        if rule is not None:
            fresh = rule.copy()
        enter = can & fresh
        if enter.any():
            rows = np.flatnonzero(enter)
            st.status[rows] = ACTIVE
            st.entered[rows] = today
            st.step[rows] = 0
            st.entries[rows] += 1
            control = uniform_draw(keys[rows], jp.key) < jp.spec.control_fraction
            st.group[rows] = np.where(control, CONTROL, TEST)
        _skip_expired(jp, st, today)
        out.append(st)
    return out


def _skip_expired(jp: JourneyPlan, st: JourneyState, today: int) -> None:
    """Steps past their last sending day (offset, plus ``defer_days`` if they defer) or whose
    campaign is not live are passed over; a journey past its last step is completed."""
    n_steps = len(jp.step_days)
    for _ in range(n_steps):
        active = np.flatnonzero(st.status == ACTIVE)
        if not len(active):
            return
        k = st.step[active]
        done = k >= n_steps
        st.status[active[done]] = COMPLETED
        rows, k = active[~done], k[~done]
        due = st.entered[rows] + jp.step_days[k]
        last = due + np.where(jp.step_defer[k], jp.spec.defer_days, 0)
        gone = (today > last) | (jp.step_campaign[k] < 0) & (today >= due)
        if not gone.any():
            return
        st.step[rows[gone]] += 1


def due_steps(
    plans: tuple[JourneyPlan, ...], states: list[JourneyState], n: int, day: date
) -> list[np.ndarray]:
    """Per journey, ``(n,)`` bool: a step is due today."""
    today = day.toordinal()
    out = []
    for jp, st in zip(plans, states, strict=True):
        active = st.status == ACTIVE
        k = np.minimum(st.step, len(jp.step_days) - 1)
        out.append(active & (st.step < len(jp.step_days)) & (today >= st.entered + jp.step_days[k]))
    return out


def outside_windows(
    history: History, n: int, campaigns: np.ndarray, vocab_live: np.ndarray
) -> np.ndarray:
    """``(n,)`` bool: inside an open measurement window of a campaign *outside* ``campaigns``
    (live-campaign mask); ``vocab_live`` maps history campaign codes to live indices (-1)."""
    live_idx = vocab_live[history.campaign]
    theirs = np.where(live_idx >= 0, campaigns[np.maximum(live_idx, 0)], False)
    open_ = history.measured & (history.window_left > 0) & ~theirs
    out = np.zeros(n, dtype=bool)
    out[history.row[open_]] = True
    return out


@dataclass
class JourneyPick:
    """Today's journey step per customer (``journey`` -1: none), the states after exits,
    entries and skips, and per journey who was due but blocked."""

    journey: np.ndarray
    step: np.ndarray
    campaign: np.ndarray
    action: np.ndarray
    group: np.ndarray
    share: np.ndarray
    states: list[JourneyState]
    blocked: list[np.ndarray]

    @classmethod
    def of(
        cls,
        setup: Any,
        batch: Any,
        masks: dict[str, np.ndarray],
        best_priority: np.ndarray,
    ) -> JourneyPick:
        """``setup``/``batch``: the run's ``RunSetup`` and ``BatchInput``; ``masks``: what each
        blocking stage removed; ``best_priority``: the best manual priority still open."""
        plans: tuple[JourneyPlan, ...] = setup.journeys
        day: date = setup.day
        n, today = batch.n, day.toordinal()
        assert batch.journeys is not None
        states = advance(plans, batch.journeys, batch.keys, day)
        due = due_steps(plans, states, n, day)
        hist = batch.history
        vocab_live = _vocab_live(hist, setup.actions.campaign_ids)
        gc = np.asarray(masks["global_control"]).any(axis=1)
        caps = masks["cap"]
        best_j = np.full(n, -1, dtype=np.int64)
        best_p = np.full(n, np.inf)
        ok_by_j = []
        for j, (jp, st) in enumerate(zip(plans, states, strict=True)):
            k = np.minimum(st.step, len(jp.step_days) - 1)
            camp = jp.step_campaign[k]
            ok = due[j] & (camp >= 0) & ~gc
            c = np.maximum(camp, 0)
            if not jp.spec.cap_exempt and caps.shape[1]:
                ok &= ~caps[np.arange(n), c]
                ok &= ~outside_windows(hist, n, jp.campaigns, vocab_live)
            ok &= ~(best_priority < jp.priority)  # a manual priority ranked above the journey
            wins = ok & (jp.priority < best_p)
            best_j[wins], best_p[wins] = j, jp.priority
            ok_by_j.append(ok)
        journey = best_j
        step = np.full(n, -1, dtype=np.int64)
        campaign = np.full(n, -1, dtype=np.int64)
        action = np.full(n, -1, dtype=np.int64)
        group = np.zeros(n, dtype=np.int8)
        share = np.ones(n)
        blocked = []
        for j, (jp, st) in enumerate(zip(plans, states, strict=True)):
            mine = journey == j
            k = st.step[mine]
            step[mine], campaign[mine], action[mine] = k, jp.step_campaign[k], jp.step_action[k]
            group[mine] = st.group[mine]
            cf = jp.spec.control_fraction
            share[mine] = np.where(st.group[mine] == CONTROL, cf, 1.0 - cf)
            # Due but not sent today: wait (a deferring step, before its last day) or skip.
            missed = due[j] & ~mine
            kk = np.minimum(st.step, len(jp.step_days) - 1)
            last = (
                st.entered + jp.step_days[kk] + np.where(jp.step_defer[kk], jp.spec.defer_days, 0)
            )
            skip = missed & (~jp.step_defer[kk] | (today >= last))
            st.step[skip] += 1
            st.status[skip & (st.step >= len(jp.step_days))] = COMPLETED
            blocked.append(missed)
        return cls(journey, step, campaign, action, group, share, states, blocked)


def _vocab_live(history: History, live_campaigns: tuple[str, ...]) -> np.ndarray:
    live = {cid: i for i, cid in enumerate(live_campaigns)}
    return np.asarray([live.get(c, -1) for c in history.campaign_vocab] + [-1], dtype=np.int64)


def after_sending(
    plans: tuple[JourneyPlan, ...], states: list[JourneyState], sent: np.ndarray, rows: np.ndarray
) -> None:
    """Move the customers of ``rows`` past the step they got (``sent (n,)``: the journey's
    position); a journey past its last step is completed."""
    for j, (jp, st) in enumerate(zip(plans, states, strict=True)):
        moved = rows[sent[rows] == j]
        st.step[moved] += 1
        st.status[moved[st.step[moved] >= len(jp.step_days)]] = COMPLETED
