"""Reading the events a refresh summarizes: the kept read equals a full scan whatever happened."""

from __future__ import annotations

from datetime import date
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from helpers_segments import add_events, simulated_shop

from orchestrator.segments import events
from orchestrator.storage.models import utcnow


def _read(engine: sa.Engine, end: date) -> pa.Table:
    with engine.connect() as conn:
        return events.read_events(conn, end)


def _scan(engine: sa.Engine, end: date) -> pa.Table:
    """A full scan, the kept read left as it was."""
    kept = dict(events._CACHE)
    events.clear_cache()
    try:
        return _read(engine, end)
    finally:
        events._CACHE.clear()
        events._CACHE.update(kept)


def test_a_kept_read_equals_a_full_scan(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[str] = []
    real = events._fetch

    def spy(cur: Any, where: str, params: tuple[Any, ...]) -> pa.Table:
        scans.append(where)
        return real(cur, where, params)

    monkeypatch.setattr(events, "_fetch", spy)
    add_events(engine, simulated_shop(40, date(2026, 1, 1), 60, seed=1))
    events.clear_cache()

    def check(end: date) -> None:
        got = _read(engine, end)
        scans.clear()
        assert got.equals(_scan(engine, end)) and got.num_rows > 0

    check(date(2026, 2, 1))
    add_events(
        engine,
        [
            ("C00001", "2026-02-03", "purchase", 10.0, None, "shoes", "email"),
            ("C00002", "2026-01-15", "purchase", 5.0, 0.2, "bags", None),  # late: an old day
            ("C00003", "2026-02-02", "return", -3.0, None, "shoes", "sms"),
            ("C00004", "2026-02-02", "visit", 0.0, None, None, None),  # not a purchase
            ("C00005", "2026-03-20", "purchase", 7.0, None, "hats", "app"),  # after the end
        ],
    )
    got = _read(engine, date(2026, 2, 5))
    if engine.dialect.name == "sqlite":
        # What was new was read, not the whole table again.
        assert all("id" in where for where in scans[-2:]) and len(scans) == 3
    assert got.equals(_scan(engine, date(2026, 2, 5)))
    check(date(2026, 2, 5))  # the same end again
    check(date(2026, 1, 20))  # an earlier end: read whole
    check(date(2026, 4, 1))
    with engine.begin() as conn:  # history changed behind the kept read: noticed
        conn.execute(sa.text("DELETE FROM event WHERE id = (SELECT MIN(id) FROM event)"))
    check(date(2026, 4, 1))


def test_an_event_corrected_in_place_is_read_again(engine: sa.Engine) -> None:
    """`events import --update` rewrites a stored event and gives it a new import time."""
    add_events(engine, simulated_shop(10, date(2026, 1, 1), 30, seed=2))
    events.clear_cache()
    end = date(2026, 2, 1)
    before = _read(engine, end)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE event SET amount = amount + 1000, imported_at = :now "
                "WHERE id = (SELECT MIN(id) FROM event WHERE type = 'purchase')"
            ),
            {"now": utcnow()},
        )
    after = _read(engine, end)
    assert after.equals(_scan(engine, end)) and not after.equals(before)
