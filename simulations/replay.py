"""Offline replay: a simulated shop whose true uplift is known, run day by day by the engine.

Uses the production use-cases only (plan apply, segments refresh, the daily run, reward
maturation and learning, the uplift report); the simulation supplies what the world would:
customers, their past purchases, and their purchases after each day's decisions, drawn from a
ground truth in which discounts pay off for lapsing customers and only cost margin for active
ones. Seeded: the same arguments give the same result.

    python -m simulations.replay --database-url sqlite:///sim.db --customers 3000 --days 28
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator import admin
from orchestrator.learning.learn import learn
from orchestrator.reports.uplift import uplift_report
from orchestrator.run import run_daily
from orchestrator.segments.refresh import refresh_segments
from orchestrator.storage.bulk import bulk_insert
from orchestrator.storage.db import init_schema, make_engine
from orchestrator.storage.models import Decision, utcnow

START = date(2026, 11, 2)

PLAN = """
version: 1
settings:
  global_control_fraction: 0.05
  allow_no_send: true
  no_send_measurement_days: 3
  policy: {name: POLICY}
attributes: {email_opt_in: bool}
caps:
  - {scope: global, max: 2, per_days: 7}
campaigns:
  - id: winback
    channel: email
    target: 'lifecycle_stage in ["at_risk", "lapsed"] and email_opt_in'
    measurement_days: 3
    control_fraction: 0.2
    treatments:
      - {id: pct20, cost: 4.0, features: {discount: 0.2}}
      - {id: news, cost: 0.1, features: {discount: 0.0}}
  - id: loyalty
    channel: email
    target: 'lifecycle_stage in ["active", "new", "reactivated"] and email_opt_in'
    measurement_days: 3
    control_fraction: 0.2
    treatments:
      - {id: pct10, cost: 2.0, features: {discount: 0.1}}
      - {id: points, cost: 0.2, features: {discount: 0.0}}
"""

# Ground truth: daily purchase probability by stage, and what each treatment adds to it.
BASE = {
    "active": 0.05,
    "new": 0.04,
    "reactivated": 0.04,
    "at_risk": 0.015,
    "lapsed": 0.005,
    "prospect": 0.002,
}
LIFT = {
    ("winback", "pct20"): {"at_risk": 0.02, "lapsed": 0.012},
    ("winback", "news"): {"at_risk": 0.004, "lapsed": 0.001},
    ("loyalty", "pct10"): {"active": 0.002, "new": 0.01, "reactivated": 0.008},
    ("loyalty", "points"): {"active": 0.004, "new": 0.002, "reactivated": 0.002},
}
ORDER_VALUE = 60.0


@dataclass
class ReplayResult:
    days: int = 0
    decisions: int = 0
    events: int = 0
    policy_versions: int = 0
    promoted: list[int] = field(default_factory=list)
    uplift: list[dict[str, Any]] = field(default_factory=list)


def _customers(engine: sa.Engine, n: int, rng: np.random.Generator) -> list[str]:
    ids = [f"S{i:06d}" for i in range(n)]
    now = utcnow()
    with engine.begin() as conn:
        bulk_insert(
            conn,
            "customer",
            ["customer_id", "attributes", "created_at", "updated_at"],
            [
                (cid, json.dumps({"email_opt_in": bool(rng.random() < 0.85)}), now, now)
                for cid in ids
            ],
        )
    # A year of history: each customer has a purchase rate and may have stopped buying.
    rate = rng.gamma(0.6, 0.01, n)
    stopped = rng.integers(0, 400, n)
    rows = []
    for i, cid in enumerate(ids):
        for back in np.flatnonzero(rng.random(365) < rate[i]):
            if back >= stopped[i] % 365 or stopped[i] >= 365:
                when = datetime.combine(START, datetime.min.time()) - timedelta(
                    days=int(back) + 1, hours=int(rng.integers(0, 12))
                )
                rows.append(
                    (
                        f"h{cid}-{back}",
                        cid,
                        when,
                        "purchase",
                        float(rng.gamma(4.0, ORDER_VALUE / 4)),
                        now,
                    )
                )
    _events(engine, rows)
    return ids


def _events(engine: sa.Engine, rows: list[tuple[Any, ...]]) -> int:
    with engine.begin() as conn:
        return bulk_insert(
            conn,
            "event",
            ["source_event_id", "customer_id", "occurred_at", "type", "amount", "imported_at"],
            rows,
            on_conflict_do_nothing=("source_event_id",),
        )


def _outcomes(engine: sa.Engine, day: date, rng: np.random.Generator) -> int:
    """Every customer's purchases on ``day``, given the treatments their open windows carry."""
    with engine.connect() as conn:
        stages: dict[str, str | None] = dict(
            conn.execute(
                sa.text("SELECT customer_id, lifecycle_stage FROM customer_features")
            ).all()
        )
    with Session(engine) as s:
        active = s.exec(
            select(Decision).where(
                col(Decision.run_date) <= day,
                col(Decision.window_end) > day,
                col(Decision.group) == "test",
                col(Decision.campaign_id).is_not(None),
            )
        ).all()
    treated = {d.customer_id: (d.campaign_id, d.treatment_id) for d in active}
    now = utcnow()
    rows = []
    for cid, stage in sorted(stages.items()):
        p = BASE.get(stage or "prospect", 0.002)
        if cid in treated:
            p += LIFT.get(treated[cid], {}).get(stage or "", 0.0)  # type: ignore[arg-type]
        if rng.random() < p:
            at = datetime.combine(day, datetime.min.time()) + timedelta(
                hours=int(rng.integers(8, 22))
            )
            rows.append(
                (f"s{cid}-{day}", cid, at, "purchase", float(rng.gamma(4.0, ORDER_VALUE / 4)), now)
            )
    return _events(engine, rows)


def replay(
    database_url: str,
    *,
    customers: int = 2000,
    days: int = 21,
    seed: int = 7,
    policy: str = "lints",
    batch_size: int = 50_000,
) -> ReplayResult:
    """Simulate ``days`` days of the engine on a fresh database at ``database_url``."""
    rng = np.random.default_rng(seed)
    engine = make_engine(database_url)
    init_schema(engine)
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(PLAN.replace("POLICY", policy))
        admin.apply_plan_file(engine, plan, actor="simulation")
    _customers(engine, customers, rng)
    result = ReplayResult()
    for offset in range(days):
        day = START + timedelta(days=offset)
        refresh_segments(engine, as_of=day - timedelta(days=1))
        report = run_daily(engine, day=day, batch_size=batch_size, seed=seed + offset)
        result.decisions += report.decided
        result.events += _outcomes(engine, day, rng)
        learned = learn(engine, as_of=day + timedelta(days=1), actor="simulation")
        if learned.promoted and learned.candidate_id is not None:
            result.promoted.append(learned.candidate_id)
        result.days += 1
    end = START + timedelta(days=days + 3)
    uplift = uplift_report(engine, as_of=end)
    result.uplift = [
        {
            "campaign": row.campaign,
            "test": row.decisions_test,
            "control": row.decisions_control,
            "uplift": row.uplift,
            "uplift_low": row.uplift_low,
            "uplift_high": row.uplift_high,
            "incremental": row.incremental,
        }
        for row in uplift.rows
    ]
    with engine.connect() as conn:
        result.policy_versions = int(
            conn.execute(sa.text("SELECT COUNT(*) FROM policy_version")).scalar_one()
        )
    engine.dispose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--database-url", default="sqlite:///simulation.db")
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--policy", default="lints")
    args = ap.parse_args()
    result = replay(
        args.database_url,
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        policy=args.policy,
    )
    print(json.dumps(result.__dict__, indent=2, default=str))


if __name__ == "__main__":
    main()
