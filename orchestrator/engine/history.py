"""Contact history of a batch and what it blocks: caps, open windows, cooldowns, exclusions.

Ages are whole days before the run date (1 = yesterday). A thing "within N days" has age < N:
a campaign with a 21-day cooldown sent on day 0 may be sent again on day 21.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from orchestrator.engine.actions import ActionSet
from orchestrator.plan import CapSpec, ExclusionSpec


@dataclass(frozen=True)
class History:
    """Past decisions of a batch's customers, one entry per decision, ``m`` entries.

    ``campaign`` and ``channel`` are codes into ``campaign_vocab``/``channel_vocab`` (-1: the
    policy sent nothing). ``sent`` marks real contacts (test group); ``window_left`` is the
    number of days the decision's measurement window is still open (<= 0: closed).
    """

    row: np.ndarray
    age: np.ndarray
    campaign: np.ndarray
    channel: np.ndarray
    sent: np.ndarray
    window_left: np.ndarray
    measured: np.ndarray
    campaign_vocab: tuple[str, ...]
    channel_vocab: tuple[str, ...]
    exempt: np.ndarray | None = None  # contacts that do not count against caps (journeys)

    @classmethod
    def empty(
        cls, campaign_vocab: Sequence[str] = (), channel_vocab: Sequence[str] = ()
    ) -> History:
        z = np.zeros(0, dtype=np.int64)
        b = np.zeros(0, dtype=bool)
        return cls(z, z, z, z, b, z, b, tuple(campaign_vocab), tuple(channel_vocab))

    @property
    def size(self) -> int:
        return len(self.row)


def history_from_columns(
    customer: Sequence[str],
    age: np.ndarray,
    campaign: Sequence[str | None],
    channel: Sequence[str | None],
    sent: np.ndarray,
    window_left: np.ndarray,
    ids: Sequence[str],
    *,
    campaign_vocab: Sequence[str],
    channel_vocab: Sequence[str],
    measured: Mapping[str, bool],
) -> History:
    """Build the history of the customers ``ids`` from decision columns (``m`` entries).

    ``age`` is days before the run date, ``window_left`` days the window stays open (<= 0:
    closed), ``sent`` marks test-group decisions of a campaign. Entries of other customers
    are dropped.
    """
    row_of = {cid: i for i, cid in enumerate(ids)}
    m = len(customer)
    row = np.fromiter((row_of.get(c, -1) for c in customer), np.int64, m)
    keep = row >= 0
    camp_code = {cid: i for i, cid in enumerate(campaign_vocab)}
    chan_code = {ch: i for i, ch in enumerate(channel_vocab)}
    measured_code = np.array([measured.get(c, False) for c in campaign_vocab] + [False])
    codes = np.fromiter((camp_code.get(c, -1) for c in campaign), np.int64, m)  # type: ignore[arg-type]
    history = History(
        row=row,
        age=np.asarray(age, dtype=np.int64),
        campaign=codes,
        channel=np.fromiter((chan_code.get(c, -1) for c in channel), np.int64, m),  # type: ignore[arg-type]
        sent=np.asarray(sent, dtype=bool),
        window_left=np.asarray(window_left, dtype=np.int64),
        measured=measured_code[codes],
        campaign_vocab=tuple(campaign_vocab),
        channel_vocab=tuple(channel_vocab),
    )
    if keep.all():
        return history
    return History(
        history.row[keep],
        history.age[keep],
        history.campaign[keep],
        history.channel[keep],
        history.sent[keep],
        history.window_left[keep],
        history.measured[keep],
        history.campaign_vocab,
        history.channel_vocab,
    )


def history_from_rows(
    rows: Sequence[Sequence[Any]],
    ids: Sequence[str],
    *,
    day: date,
    campaign_vocab: Sequence[str],
    channel_vocab: Sequence[str],
    measured: Mapping[str, bool],
) -> History:
    """Build a history from decision rows ``(customer_id, run_date, campaign_id, channel,
    group, window_end, ...)``; dates may be ``date`` objects or ISO strings."""
    if not rows:
        return History.empty(campaign_vocab, channel_vocab)
    cust, run_dates, camps, chans, groups, ends = (
        list(c) for c in zip(*(r[:6] for r in rows), strict=True)
    )
    today = np.datetime64(day, "D")
    run_d = np.array([str(d) for d in run_dates], dtype="datetime64[D]")
    end_d = np.array([str(e) if e is not None else "NaT" for e in ends], dtype="datetime64[D]")
    window_left = (end_d - today).astype(np.int64)
    window_left[np.isnat(end_d)] = 0
    sent = np.array([g == "test" and c is not None for g, c in zip(groups, camps, strict=True)])
    return history_from_columns(
        cust,
        (today - run_d).astype(np.int64),
        camps,
        chans,
        sent,
        window_left,
        ids,
        campaign_vocab=campaign_vocab,
        channel_vocab=channel_vocab,
        measured=measured,
    )


def lookback_days(
    actions: ActionSet,
    caps: Sequence[CapSpec],
    exclusions: Sequence[ExclusionSpec],
    max_window: int,
) -> int:
    """How many days of history the blocks of a run can need."""
    spans = [max_window, 1, CONTACT_LOOKBACK]
    spans += [c.per_days for c in caps]
    spans += [x.days for x in exclusions]
    spans += [int(d) for d in actions.cooldown_days]
    return max(spans)


def cap_blocks(
    history: History, n: int, caps: Sequence[CapSpec], actions: ActionSet
) -> tuple[np.ndarray, np.ndarray]:
    """Customers at a cap: ``(n,)`` bool for the global caps, ``(n, C)`` bool per campaign.

    A customer may be contacted today when fewer than ``max`` contacts fall in the rolling
    window that ends today (``per_days - 1`` past days plus today).
    """
    glob = np.zeros(n, dtype=bool)
    by_channel = np.zeros((n, len(actions.channels)), dtype=bool)
    counted = history.sent if history.exempt is None else history.sent & ~history.exempt
    for cap in caps:
        recent = counted & (history.age < cap.per_days)
        if cap.scope == "channel":
            if cap.channel not in history.channel_vocab:
                continue
            recent &= history.channel == history.channel_vocab.index(cap.channel)
        counts = np.bincount(history.row[recent], minlength=n)
        full = counts >= cap.max
        if cap.scope == "global":
            glob |= full
        elif cap.channel in actions.channels:
            by_channel[:, actions.channels.index(cap.channel)] |= full
    return glob, by_channel.take(actions.channel_of, axis=1)


def open_windows(history: History, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` bool: inside an open window of a measured campaign; ``(n,)`` days it stays open."""
    live = history.measured & (history.window_left > 0)
    days_left = np.zeros(n, dtype=np.int64)
    np.maximum.at(days_left, history.row[live], history.window_left[live])
    return days_left > 0, days_left


def _codes_of(actions: ActionSet, vocab: tuple[str, ...]) -> np.ndarray:
    """Map each vocabulary code to the live campaign index (-1 if not live today)."""
    live = {cid: i for i, cid in enumerate(actions.campaign_ids)}
    return np.asarray([live.get(cid, -1) for cid in vocab] + [-1], dtype=np.int64)


def cooldown_blocks(history: History, n: int, actions: ActionSet) -> np.ndarray:
    """``(n, C)`` bool: the campaign was sent to the customer within its cooldown."""
    blocked = np.zeros((n, actions.n_campaigns), dtype=bool)
    if history.size == 0:
        return blocked
    live_of = _codes_of(actions, history.campaign_vocab)
    live_idx = live_of[history.campaign]  # -1 (the extra last entry) for code -1
    cooldown = np.where(live_idx >= 0, actions.cooldown_days[np.maximum(live_idx, 0)], 0)
    hit = history.sent & (live_idx >= 0) & (history.age < cooldown)
    blocked[history.row[hit], live_idx[hit]] = True
    return blocked


def exclusion_blocks(
    history: History, n: int, exclusions: Sequence[ExclusionSpec], actions: ActionSet
) -> np.ndarray:
    """``(n, C)`` bool: a campaign excluded because another was received within N days."""
    blocked = np.zeros((n, actions.n_campaigns), dtype=bool)
    live = {cid: i for i, cid in enumerate(actions.campaign_ids)}
    vocab = {cid: i for i, cid in enumerate(history.campaign_vocab)}
    for x in exclusions:
        target = live.get(x.exclude)
        source = vocab.get(x.if_received)
        if target is None or source is None:
            continue
        hit = history.sent & (history.campaign == source) & (history.age < x.days)
        blocked[history.row[hit], target] = True
    return blocked


# --- contact fatigue: what every policy sees of a customer's recent contacts -----------------

CONTACT_WINDOWS = (7, 30)  # contacts counted over these many past days
CONTACT_LOOKBACK = max(CONTACT_WINDOWS)
CONTACT_PREFIX = "contacts."


def contact_feature_names(channels: Sequence[str]) -> tuple[str, ...]:
    """Context names of the contact-history features, for the plan's ``channels``.

    >>> contact_feature_names(["sms", "email"])
    ('contacts.7d', 'contacts.30d', 'contacts.days_since', 'contacts.7d.email', 'contacts.7d.sms')
    """
    names = [f"{CONTACT_PREFIX}{w}d" for w in CONTACT_WINDOWS]
    names.append(f"{CONTACT_PREFIX}days_since")
    names += [f"{CONTACT_PREFIX}{CONTACT_WINDOWS[0]}d.{ch}" for ch in sorted(channels)]
    return tuple(names)


def is_contact(name: str) -> bool:
    """Whether a context name is a contact-history feature (built from history, not columns)."""
    return name.startswith(CONTACT_PREFIX)


def contact_features(history: History, n: int, names: Sequence[str]) -> np.ndarray:
    """``(n, len(names))`` float32: contacts (test-group sends) in the last 7 and 30 days,
    days since the last contact (``CONTACT_LOOKBACK`` when none is known), and contacts in the
    last 7 days per channel, for the ``contact_feature_names`` given.

    The history must reach back ``CONTACT_LOOKBACK`` days (``lookback_days`` makes sure)."""
    out = np.zeros((n, len(names)), dtype=np.float32)
    sent = history.sent
    for j, name in enumerate(names):
        rest = name.removeprefix(CONTACT_PREFIX)
        if rest == "days_since":
            since = np.full(n, CONTACT_LOOKBACK, dtype=np.int64)
            np.minimum.at(since, history.row[sent], history.age[sent])
            out[:, j] = since
            continue
        span, _, channel = rest.partition(".")
        recent = sent & (history.age < int(span.removesuffix("d")))
        if channel:
            if channel not in history.channel_vocab:
                continue
            recent &= history.channel == history.channel_vocab.index(channel)
        out[:, j] = np.bincount(history.row[recent], minlength=n)
    return out
