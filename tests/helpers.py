"""Test data written straight to the tables (imports have their own tests)."""

from __future__ import annotations

from datetime import date

import numpy as np
import sqlalchemy as sa

from orchestrator.storage.models import Customer, CustomerFeatures, utcnow

STAGES = ("new", "active", "at_risk", "lapsed")


def seed_customers(engine: sa.Engine, n: int, *, seed: int = 0) -> list[str]:
    """``n`` customers with opt-ins, a country, a birth date and computed features."""
    rng = np.random.default_rng(seed)
    ids = [f"C{i:06d}" for i in range(n)]
    now = utcnow()
    customers, features = [], []
    for i, cid in enumerate(ids):
        attrs = {
            "email_opt_in": bool(rng.random() < 0.8),
            "sms_opt_in": bool(rng.random() < 0.5),
            "country": str(rng.choice(["ES", "FR", "DE"])),
            "birth_date": f"19{rng.integers(50, 99)}-11-{rng.integers(20, 28):02d}",
        }
        customers.append(
            {"customer_id": cid, "attributes": attrs, "created_at": now, "updated_at": now}
        )
        features.append(
            {
                "customer_id": cid,
                "as_of": date(2026, 11, 1),
                "updated_at": now,
                "lifecycle_stage": STAGES[i % len(STAGES)],
                "monetary": float(rng.gamma(2.0, 50.0)),
                "p_alive": float(rng.random()),
                "frequency": int(rng.integers(0, 10)),
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer.__table__), customers)  # type: ignore[arg-type]
        conn.execute(sa.insert(CustomerFeatures.__table__), features)  # type: ignore[arg-type]
    return ids
