"""Reward maturation: when a decision's window has closed, store what its customer produced.

reward = revenue inside the window (sum of event amounts; returns are negative) minus the
treatment's unit cost for a sent (test-group) decision. Control-group and "send nothing"
decisions cost nothing: they are the no-contact arm. A decision matures once (the reward's
primary key is the decision id); maturing again adds nothing.

A control decision's window blocks other measured campaigns, so nothing else reaches the
customer inside it. A "send nothing" decision blocks nothing (sending nothing today does not
forbid a message tomorrow), so its window is cut at the customer's next contact: what it
measures is the no-contact outcome, not the next campaign's. The reward keeps the number of
days actually measured (``window_days``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import sqlalchemy as sa

from orchestrator.measure.outcomes import window_outcomes
from orchestrator.storage.db import require_schema
from orchestrator.storage.models import Reward, utcnow

PURCHASE_TYPES = ("purchase",)


@dataclass
class MaturationReport:
    as_of: date
    matured: int = 0
    converted: int = 0
    value: float = 0.0
    still_open: int = 0
    seconds: float = 0.0


def _day_numbers(values: list[object]) -> np.ndarray:
    """Dates or datetimes (objects or ISO text) to day ordinals."""
    as_days = np.array([str(v)[:10] for v in values], dtype="datetime64[D]")
    return as_days.astype(np.int64)


def mature_rewards(
    engine: sa.Engine,
    *,
    as_of: date,
    chunk: int = 200_000,
    progress: Callable[[int, int | None], None] | None = None,
) -> MaturationReport:
    """Store the reward of every decision whose window ended on or before ``as_of``."""
    require_schema(engine)
    started = time.perf_counter()
    report = MaturationReport(as_of=as_of)
    pending_sql = sa.text(
        "SELECT COUNT(*) FROM decision d LEFT JOIN reward r ON r.decision_id = d.id "
        "WHERE r.decision_id IS NULL AND d.window_end <= :as_of"
    )
    with engine.connect() as conn:
        total = int(conn.execute(pending_sql, {"as_of": as_of}).scalar_one())
        report.still_open = int(
            conn.execute(
                sa.text("SELECT COUNT(*) FROM decision WHERE window_end > :as_of"),
                {"as_of": as_of},
            ).scalar_one()
        )
    after = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    'SELECT d.id, d.customer_id, d.run_date, d.window_end, d."group", '
                    "d.campaign_id, t.cost FROM decision d "
                    "LEFT JOIN reward r ON r.decision_id = d.id "
                    "LEFT JOIN treatment t ON t.campaign_id = d.campaign_id "
                    "AND t.id = d.treatment_id "
                    "WHERE r.decision_id IS NULL AND d.window_end <= :as_of AND d.id > :after "
                    "ORDER BY d.id LIMIT :n"
                ),
                {"as_of": as_of, "after": after, "n": chunk},
            ).all()
            if not rows:
                break
            after = int(rows[-1][0])
            _mature_chunk(conn, list(rows), report)
        if progress:
            progress(report.matured, total)
    report.seconds = time.perf_counter() - started
    return report


def _mature_chunk(conn: sa.Connection, rows: list[sa.Row], report: MaturationReport) -> None:
    ids, customers, starts, ends, groups, campaigns, costs = zip(*rows, strict=True)
    start_day = _day_numbers(list(starts))
    end_day = _day_numbers(list(ends))
    code_of: dict[str, int] = {}
    d_cust = np.fromiter((code_of.setdefault(c, len(code_of)) for c in customers), np.int64)
    lo = date.fromordinal(int(start_day.min()) + 719163)  # datetime64 day 0 is 1970-01-01
    hi = date.fromordinal(int(end_day.max()) + 719163)
    events = conn.execute(
        sa.text(
            "SELECT customer_id, occurred_at, amount, type FROM event "
            "WHERE occurred_at >= :lo AND occurred_at < :hi"
        ),
        {
            "lo": datetime.combine(lo, datetime.min.time()),
            "hi": datetime.combine(hi, datetime.min.time()),
        },
    ).all()
    kept = [e for e in events if e[0] in code_of]
    if kept:
        e_cust_ids, e_at, e_amount, e_type = zip(*kept, strict=True)
        e_cust = np.fromiter((code_of[c] for c in e_cust_ids), np.int64, len(kept))
        e_day = _day_numbers(list(e_at))
        e_amt = np.asarray(e_amount, dtype=np.float64)
        e_buy = np.fromiter((t in PURCHASE_TYPES for t in e_type), bool, len(kept))
    else:
        e_cust = e_day = np.zeros(0, dtype=np.int64)
        e_amt, e_buy = np.zeros(0), np.zeros(0, dtype=bool)
    no_send = np.fromiter((c is None for c in campaigns), bool, len(rows))
    if no_send.any():
        end_day = _cut_at_next_contact(conn, code_of, d_cust, start_day, end_day, no_send, lo, hi)
    out = window_outcomes(d_cust, start_day, end_day, e_cust, e_day, e_amt, e_buy)
    sent = np.fromiter(
        (g == "test" and c is not None for g, c in zip(groups, campaigns, strict=True)),
        bool,
        len(rows),
    )
    cost = np.where(sent, np.array([c or 0.0 for c in costs], dtype=np.float64), 0.0)
    value = out.revenue - cost
    now = utcnow()
    conn.execute(
        sa.insert(Reward),
        [
            {
                "decision_id": int(i),
                "value": float(v),
                "revenue": float(r),
                "cost": float(c),
                "converted": bool(b),
                "matured_at": now,
                "window_days": int(w),
            }
            for i, v, r, c, b, w in zip(
                ids, value, out.revenue, cost, out.converted, end_day - start_day, strict=True
            )
        ],
    )
    report.matured += len(rows)
    report.converted += int(out.converted.sum())
    report.value += float(value.sum())


def _cut_at_next_contact(
    conn: sa.Connection,
    code_of: dict[str, int],
    d_cust: np.ndarray,
    start_day: np.ndarray,
    end_day: np.ndarray,
    cut: np.ndarray,
    lo: date,
    hi: date,
) -> np.ndarray:
    """``end_day (n,)`` with the rows in ``cut`` ended at the customer's first contact (a
    test-group send) after the decision's day, when that comes before the window's end."""
    sends = conn.execute(
        sa.text(
            "SELECT customer_id, run_date FROM decision WHERE run_date > :lo AND run_date < :hi "
            "AND \"group\" = 'test' AND campaign_id IS NOT NULL"
        ),
        {"lo": lo, "hi": hi},
    ).all()
    kept = [(code_of[c], d) for c, d in sends if c in code_of]
    if not kept:
        return end_day
    s_cust = np.fromiter((k[0] for k in kept), np.int64, len(kept))
    s_day = _day_numbers([k[1] for k in kept])
    # One sorted key per send, (customer, day); the first send after a decision's day is the
    # first key above (customer, start day).
    span = np.int64(1 << 32)
    keys = np.sort(s_cust * span + s_day)
    rows = np.flatnonzero(cut)
    probe = d_cust[rows] * span + start_day[rows]
    at = np.searchsorted(keys, probe, side="right")
    found = at < len(keys)
    nxt = np.where(found, keys[np.minimum(at, len(keys) - 1)], 0)
    same = found & (nxt // span == d_cust[rows])
    nxt_day = nxt % span
    out = end_day.copy()
    hit = same & (nxt_day < end_day[rows])
    out[rows[hit]] = nxt_day[hit]
    return out
