"""A customer's contact state: their recent decisions as compact entries, one blob per customer.

The blocking stages and the contact features need each customer's decisions of the last few
weeks. Reading them from the decision log means millions of rows per run; the contact state keeps
them per customer instead (``contact_state`` table, maintained with the decisions), as packed
``ENTRY`` records: run day, window end, campaign and channel (32-bit label hashes, so the state
needs no vocabulary), and flags: 1 a real contact, 2 one that does not count against caps (a
cap-exempt journey's step). Both sources give the same ``Entries``,
and ``history_from_entries`` is the one way to turn them into the run's ``History``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from orchestrator.engine.history import History

SENT, CAP_EXEMPT = 1, 2  # flags of an entry's "sent" byte
ENTRY = np.dtype(
    [("day", "<i4"), ("end", "<i4"), ("campaign", "<u4"), ("channel", "<u4"), ("sent", "u1")]
)


@lru_cache(maxsize=4096)
def label32(label: str | None) -> int:
    """A 32-bit key of a campaign or channel id (0: none).

    >>> label32(None), label32("email") == label32("email"), label32("email") != 0
    (0, True, True)
    """
    if label is None:
        return 0
    key = int.from_bytes(hashlib.blake2b(label.encode(), digest_size=4).digest(), "little")
    return key or 1


@dataclass(frozen=True)
class Entries:
    """Past decisions of a batch: ``row (m,)`` the customer's row in the batch, ``data (m,)``
    packed ``ENTRY`` records, sorted by row."""

    row: np.ndarray
    data: np.ndarray

    @classmethod
    def empty(cls) -> Entries:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=ENTRY))

    def __len__(self) -> int:
        return len(self.row)


def entries_from_columns(
    row: np.ndarray,
    day: date,
    age: np.ndarray,
    window_left: np.ndarray,
    campaign: Sequence[str | None],
    channel: Sequence[str | None],
    sent: np.ndarray,
) -> Entries:
    """Entries from decision-log columns: ages and window days relative to ``day``."""
    today = day.toordinal()
    data = np.zeros(len(row), dtype=ENTRY)
    data["day"] = today - np.asarray(age, dtype=np.int64)
    data["end"] = today + np.asarray(window_left, dtype=np.int64)
    data["campaign"] = _keys(campaign)
    data["channel"] = _keys(channel)
    data["sent"] = np.asarray(sent, dtype=np.uint8)  # SENT / CAP_EXEMPT flags
    order = np.argsort(row, kind="stable")
    return Entries(np.asarray(row, dtype=np.int64)[order], data[order])


def _keys(labels: Sequence[str | None]) -> np.ndarray:
    uniq: dict[str | None, int] = {}
    codes = np.fromiter((uniq.setdefault(c, len(uniq)) for c in labels), np.int64, len(labels))
    table = np.asarray([label32(c) for c in uniq], dtype=np.uint32)
    return table[codes] if len(table) else np.zeros(0, dtype=np.uint32)


def decode_states(states: Sequence[bytes | None]) -> Entries:
    """The entries of a batch from each customer's stored blob (None: no state)."""
    sizes = np.fromiter((len(s) if s else 0 for s in states), np.int64, len(states))
    if not sizes.any():
        return Entries.empty()
    data = np.frombuffer(b"".join(s for s in states if s), dtype=ENTRY)
    return Entries(np.repeat(np.arange(len(states)), sizes // ENTRY.itemsize), data)


def encode_states(entries: Entries, n: int) -> list[bytes | None]:
    """Each of the ``n`` rows' entries as a blob (None: none)."""
    counts = np.bincount(entries.row, minlength=n)
    raw = np.ascontiguousarray(entries.data).tobytes()
    ends = np.cumsum(counts) * ENTRY.itemsize
    starts = ends - counts * ENTRY.itemsize
    return [
        raw[s:e] if e > s else None for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


def with_decisions(
    entries: Entries,
    day: date,
    horizon: int,
    rows: np.ndarray,
    campaign: Sequence[str | None],
    channel: Sequence[str | None],
    sent: np.ndarray,
    window_days: np.ndarray,
) -> Entries:
    """The entries after ``day``'s decisions of ``rows``: those within ``horizon`` days, then
    the new ones (an entry of ``day`` itself, from a cleared run of the date, is replaced;
    entries of later dates are kept)."""
    today = day.toordinal()
    keep = (entries.data["day"] > today - horizon) & (entries.data["day"] != today)
    new = np.zeros(len(rows), dtype=ENTRY)
    new["day"] = today
    new["end"] = today + np.asarray(window_days, dtype=np.int64)
    new["campaign"] = _keys(campaign)
    new["channel"] = _keys(channel)
    new["sent"] = np.asarray(sent, dtype=np.uint8)  # SENT / CAP_EXEMPT flags
    row = np.concatenate([entries.row[keep], np.asarray(rows, dtype=np.int64)])
    data = np.concatenate([entries.data[keep], new])
    order = np.lexsort((data["day"], row))
    return Entries(row[order], data[order])


def history_from_entries(
    entries: Entries,
    n: int,
    *,
    day: date,
    lookback_days: int,
    campaign_vocab: Sequence[str],
    channel_vocab: Sequence[str],
    measured: Mapping[str, bool],
) -> History:
    """The run's ``History`` of ``n`` customers: entries before ``day`` within ``lookback_days``;
    campaigns and channels the plan does not know get code -1, as in the decision log."""
    today = day.toordinal()
    d = entries.data
    age = today - d["day"].astype(np.int64)
    live = (age >= 1) & (age <= lookback_days) & (entries.row < n)
    d, row, age = d[live], entries.row[live], age[live]
    campaign = _codes(d["campaign"], campaign_vocab)
    measured_code = np.array([measured.get(c, False) for c in campaign_vocab] + [False])
    return History(
        row=row,
        age=age,
        campaign=campaign,
        channel=_codes(d["channel"], channel_vocab),
        sent=(d["sent"] & SENT) > 0,
        window_left=d["end"].astype(np.int64) - today,
        measured=measured_code[campaign],
        campaign_vocab=tuple(campaign_vocab),
        channel_vocab=tuple(channel_vocab),
        exempt=(d["sent"] & CAP_EXEMPT) > 0,
    )


def _codes(keys: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    """Index of each key's label in ``vocab`` (-1: not in it)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    lookup = {label32(v): i for i, v in enumerate(vocab)}
    uniq, inverse = np.unique(keys, return_inverse=True)
    table = np.asarray([lookup.get(int(k), -1) for k in uniq.tolist()], dtype=np.int64)
    return table[inverse.reshape(-1)]
