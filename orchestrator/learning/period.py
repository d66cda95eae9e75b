"""The latest period's logged days, kept between learning steps of one process.

Every learning step evaluates and fits the no-contact baseline on the run dates of the latest
``eval_days + longest window`` days. From one day to the next most of those dates are unchanged:
a date's decisions mature in a few waves (one per window length), so re-reading all of them
every day was a quarter of a simulated day. A long-lived process (the daemon, `orch simulate`)
keeps each date's :class:`LoggedDay` with a fingerprint of what it was read from, and reads
again only the dates whose fingerprint moved:

- per run date: the number of matured decisions, their newest maturation time, the sum of their
  rewards, the range of decision ids, and the run's token (new for every run and forced rerun of
  the date, so a database recreated at the same address never matches an old entry);
- for all dates: the newest plan revision (an action's features come from the plan), the salt
  and the holdout fraction.

The cache holds at most ``ORCH_LOGGED_CACHE_MB`` (default 512) of arrays; a period larger than
that is read whole every time, as before. Cached arrays are read-only, so a caller that tried to
change one in place would fail loudly instead of corrupting the next step.
"""

from __future__ import annotations

import os
import threading
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.learning.logged import LoggedDay, load_logged

_Fingerprint = tuple[Any, ...]
_LOCK = threading.Lock()
# (database, salt, holdout fraction, plan revision) -> run date -> (fingerprint, day or None)
_CACHE: dict[tuple[Any, ...], dict[date, tuple[_Fingerprint, LoggedDay | None]]] = {}


def budget_bytes() -> int:
    return int(float(os.environ.get("ORCH_LOGGED_CACHE_MB", "512")) * 2**20)


def fingerprints(engine: sa.Engine, since: date, until: date) -> dict[date, _Fingerprint]:
    """What each run date's matured, replayable decisions were read from (see the module)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.run_date, COUNT(*), MAX(r.matured_at), SUM(r.value), MIN(d.id), "
                "MAX(d.id), MAX(u.token) FROM decision d "
                "JOIN reward r ON r.decision_id = d.id "
                "LEFT JOIN run u ON u.run_date = d.run_date "
                "WHERE d.run_date >= :since AND d.run_date <= :until "
                "GROUP BY d.run_date"
            ),
            {"since": since, "until": until},
        ).all()
    out = {}
    for day, *rest in rows:
        key = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
        out[key] = (rest[0], str(rest[1]), float(rest[2] or 0.0), *rest[3:])
    return out


def _revision(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT MAX(id) FROM plan_revision")).scalar()


def _nbytes(day: LoggedDay) -> int:
    return sum(v.nbytes for v in vars(day).values() if isinstance(v, np.ndarray)) + 64 * day.n


def _freeze(day: LoggedDay) -> LoggedDay:
    for value in vars(day).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return day


def load_period(
    engine: sa.Engine, *, salt: str, holdout_fraction: float, since: date, until: date
) -> list[LoggedDay]:
    """``load_logged(since=, until=)``, reading only the dates that changed since the last call
    for the same database, salt and holdout in this process."""
    found = fingerprints(engine, since, until)
    key = (str(engine.url), salt, float(holdout_fraction), _revision(engine))
    with _LOCK:
        cached = {k: v for k, v in _CACHE.get(key, {}).items() if k in found}
        stale = [day for day, fp in found.items() if day not in cached or cached[day][0] != fp]
        if stale:
            read = {
                d.run_date: d
                for d in load_logged(
                    engine, salt=salt, holdout_fraction=holdout_fraction, dates=sorted(stale)
                )
            }
            for day in stale:
                cached[day] = (found[day], _freeze(read[day]) if day in read else None)
        days = [cached[day][1] for day in sorted(cached)]
        kept = [d for d in days if d is not None]
        # One entry per database (an old address's entry is dropped when a new one comes in
        # only if the budget is exceeded: simulations keep one database per contender).
        _CACHE.pop(key, None)
        if sum(_nbytes(d) for d in kept) <= budget_bytes():
            _CACHE[key] = cached
            total = sum(_nbytes(d) for v in _CACHE.values() for _, d in v.values() if d)
            while total > budget_bytes() and len(_CACHE) > 1:
                oldest = next(iter(_CACHE))
                total -= sum(_nbytes(d) for _, d in _CACHE.pop(oldest).values() if d)
        return kept


def clear() -> None:
    """Forget every cached day (tests; a process that rewrote history behind the cache)."""
    with _LOCK:
        _CACHE.clear()
