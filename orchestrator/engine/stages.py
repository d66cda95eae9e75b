"""The stages that remove options, in order, each one function pair in one registry.

A stage says, for a batch, which (customer, campaign) options it blocks (``blocks``, ``(n, C)``
bool), and, for one customer and campaign, why in words (``why``, for `orch explain`). The run's
summary counts customers by the stage that removed their last option; `orch explain` prints the
words. Adding a stage is one ``blocks`` function, one ``why`` function and one entry in
``STAGES``: the run, its counts, its logged summary and explain pick it up from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from orchestrator.engine.actions import ActionSet
from orchestrator.engine.hashing import Draws, in_global_control
from orchestrator.engine.history import (
    History,
    cap_blocks,
    cooldown_blocks,
    exclusion_blocks,
    open_windows,
)
from orchestrator.engine.journeys import JourneyInput, JourneyPlan
from orchestrator.plan import CapSpec, ExclusionSpec
from policies.base import Policy


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
    journeys: tuple[JourneyPlan, ...] = ()


@dataclass(frozen=True)
class BatchInput:
    """One batch of customers: ``keys (n,)`` uint64, ``contexts (n, d)``, rule ``columns``,
    their contact ``history`` and their keyed random ``draws``."""

    keys: np.ndarray
    columns: Any
    contexts: np.ndarray
    history: History
    draws: Draws
    journeys: JourneyInput | None = None  # where the customers stand in each journey

    @property
    def n(self) -> int:
        return len(self.keys)


Blocks = Callable[[RunSetup, BatchInput], np.ndarray]
Why = Callable[[RunSetup, BatchInput, int, int], list[str]]


@dataclass(frozen=True)
class Stage:
    name: str
    label: str  # how the run's summary names it
    blocks: Blocks  # (n, C) bool: True where the stage removes the option
    why: Why  # (setup, batch, row, campaign index) -> the reasons in words


# --- the stages ------------------------------------------------------------------------------


def _global_control(setup: RunSetup, batch: BatchInput) -> np.ndarray:
    gc = in_global_control(batch.keys, setup.global_control_fraction)
    return np.broadcast_to(gc[:, None], (batch.n, setup.actions.n_campaigns))


def _why_global_control(setup: RunSetup, batch: BatchInput, row: int, ci: int) -> list[str]:
    return ["global control group (never contacted)"]


def _window(setup: RunSetup, batch: BatchInput) -> np.ndarray:
    window_open, _ = open_windows(batch.history, batch.n)
    return window_open[:, None] & setup.actions.measured[None, :]


def _why_window(setup: RunSetup, batch: BatchInput, row: int, ci: int) -> list[str]:
    _, left = open_windows(batch.history, batch.n)
    until = setup.day + timedelta(days=int(left[row]))
    return [f"measurement window of another campaign open until {until}"]


def _cooldown(setup: RunSetup, batch: BatchInput) -> np.ndarray:
    return cooldown_blocks(batch.history, batch.n, setup.actions)


def _why_cooldown(setup: RunSetup, batch: BatchInput, row: int, ci: int) -> list[str]:
    camp = setup.actions.campaigns[ci]
    last = max(d for c, d in sent_of(batch.history, row, setup.day) if c == camp.id)
    return [f"cooldown: last sent {last}, {camp.cooldown_days} days"]


def _exclusion(setup: RunSetup, batch: BatchInput) -> np.ndarray:
    return exclusion_blocks(batch.history, batch.n, setup.exclusions, setup.actions)


def _why_exclusion(setup: RunSetup, batch: BatchInput, row: int, ci: int) -> list[str]:
    camp, day = setup.actions.campaigns[ci], setup.day
    sent = sent_of(batch.history, row, day)
    out = []
    for x in setup.exclusions:
        got = [d for c, d in sent if c == x.if_received and (day - d).days < x.days]
        if x.exclude == camp.id and got:
            out.append(f"excluded by {x.if_received} received {max(got)} ({x.days} days)")
    return out


def _cap(setup: RunSetup, batch: BatchInput) -> np.ndarray:
    glob, by_campaign = cap_blocks(batch.history, batch.n, setup.caps, setup.actions)
    return by_campaign | glob[:, None]


def _why_cap(setup: RunSetup, batch: BatchInput, row: int, ci: int) -> list[str]:
    camp, hist = setup.actions.campaigns[ci], batch.history
    mine = (hist.row == row) & hist.sent
    out = []
    for cap in setup.caps:
        if cap.scope != "global" and cap.channel != camp.channel:
            continue
        recent = mine & (hist.age < cap.per_days)
        if cap.scope == "channel":
            code = (
                hist.channel_vocab.index(cap.channel) if cap.channel in hist.channel_vocab else -2
            )
            recent &= hist.channel == code
        used = int(recent.sum())
        if used >= cap.max:
            scope = cap.channel or "all channels"
            out.append(f"cap reached: {used}/{cap.max} on {scope} in {cap.per_days} days")
    return out


STAGES: tuple[Stage, ...] = (
    Stage("global_control", "global control group", _global_control, _why_global_control),
    Stage("window", "open measurement window", _window, _why_window),
    Stage("cooldown", "campaign cooldown", _cooldown, _why_cooldown),
    Stage("exclusion", "exclusion rule", _exclusion, _why_exclusion),
    Stage("cap", "frequency cap", _cap, _why_cap),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def sent_of(history: History, row: int, day: date) -> list[tuple[str, date]]:
    """The campaigns sent to the customer of ``row`` (test group), with their dates."""
    mine = np.flatnonzero((history.row == row) & history.sent & (history.campaign >= 0))
    vocab = history.campaign_vocab
    return [
        (vocab[int(history.campaign[i])], day - timedelta(days=int(history.age[i])))
        for i in mine.tolist()
    ]
