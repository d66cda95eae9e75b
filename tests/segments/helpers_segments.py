"""Test data for the segmentation, written straight into the tables."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import count

import numpy as np
import sqlalchemy as sa

from orchestrator.storage.models import Customer, Event, utcnow

_ids = count()

# (customer, "YYYY-MM-DD[ HH:MM]", type, amount, discount, category, channel)
EventRow = tuple[str, str, str, float, float | None, str | None, str | None]


def add_customers(engine: sa.Engine, ids: list[str]) -> None:
    now = utcnow()
    rows = [{"customer_id": c, "attributes": {}, "created_at": now, "updated_at": now} for c in ids]
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer.__table__), rows)  # type: ignore[attr-defined]


def add_events(engine: sa.Engine, rows: list[EventRow]) -> None:
    now = utcnow()
    records = [
        {
            "source_event_id": f"S{next(_ids):09d}",
            "customer_id": customer,
            "occurred_at": datetime.fromisoformat(when if " " in when else f"{when} 12:00"),
            "type": kind,
            "amount": amount,
            "discount": discount,
            "category": category,
            "channel": channel,
            "imported_at": now,
        }
        for customer, when, kind, amount, discount, category, channel in rows
    ]
    if records:
        with engine.begin() as conn:
            conn.execute(sa.insert(Event.__table__), records)  # type: ignore[attr-defined]


def simulated_shop(n: int, start: date, days: int, seed: int) -> list[EventRow]:
    """Purchases of ``n`` customers following a BG/NBD process with gamma-gamma order values."""
    rng = np.random.default_rng(seed)
    rows: list[EventRow] = []
    for i in range(n):
        cid = f"C{i:05d}"
        first = int(rng.integers(0, days))
        rate = rng.gamma(0.8, 1 / 30.0)
        drop = rng.beta(1.2, 4.0)
        nu = rng.gamma(4.0, 1 / 60.0)
        day = float(first)
        while day < days:
            when = (start + timedelta(days=int(day))).isoformat()
            amount = round(float(rng.gamma(3.0, 1 / nu)), 2) + 1.0
            discount = float(rng.choice([0.0, 0.0, 0.1]))
            category = str(rng.choice(["shoes", "home", "beauty"]))
            rows.append((cid, when, "purchase", amount, discount, category, "web"))
            if day > first and rng.random() < drop:
                break
            day += rng.exponential(1 / rate)
    return rows
