"""`orch report programme`: what all campaigns together added, against the global control group.

The global control group is a stable hash of the customer id (``settings.salt``,
``settings.global_control_fraction``): its customers never get a decision. Over a period, each
customer's value is what they spent (the sum of their event amounts, returns negative, as in
rewards) minus the costs of the sends they got (from ``reward.cost`` of the period's decisions).
The programme's uplift is the mean value of everyone else minus that of the global control group
(Welch interval), and its incremental value that uplift times everyone else.

Everyone in the ``customer`` table counts, spenders or not; events of customers not in it are
left out (the engine never decides for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.admin import current_plan
from orchestrator.engine.hashing import customer_keys, in_global_control
from orchestrator.errors import InputError
from orchestrator.measure.uplift import MIN_PER_ARM, group_moments, newcombe_diff, welch_diff
from orchestrator.reports.columnar import Col, is_postgres, read_columns
from orchestrator.rewards import mature_rewards


@dataclass
class ProgrammeReport:
    """The programme's uplift over ``[since, until]``; money per customer unless named."""

    as_of: date
    since: date
    until: date
    fraction: float
    n_control: int
    n_rest: int
    value_control: float
    value_rest: float
    revenue_rest: float
    cost_rest: float
    uplift: float
    uplift_low: float
    uplift_high: float
    p_value: float
    conversion_control: float
    conversion_rest: float
    conversion_diff: float
    conversion_low: float
    conversion_high: float
    conversion_p: float
    incremental: float
    incremental_low: float
    incremental_high: float
    status: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, float) and not np.isfinite(value):
                value = None
            out[key] = value
        return out


def programme_uplift(
    engine: sa.Engine,
    *,
    as_of: date,
    since: date | None = None,
    until: date | None = None,
    alpha: float = 0.05,
) -> ProgrammeReport:
    """Compare the global control group with everyone else over ``[since, until]``.

    Defaults: from the first decision date to the day before ``as_of``.
    """
    settings = current_plan(engine).settings
    if settings.global_control_fraction <= 0:
        raise InputError(
            "the plan has no global control group (settings.global_control_fraction is 0): "
            "the programme's uplift cannot be measured"
        )
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(run_date) FROM decision")).scalar()
    if since is None:
        if first is None:
            raise InputError("no decisions yet: the programme has not started (give --since)")
        since = date.fromisoformat(str(first)[:10])
    until = until or as_of - timedelta(days=1)
    if since > until:
        raise InputError(f"empty period: {since} is after {until}")
    _mature_period(engine, as_of, since, until)
    with engine.connect() as conn:
        customers = read_columns(
            conn,
            [Col("customer_id", "c.customer_id", "text")],
            from_sql="customer c",
            chunk_key="0" if is_postgres(conn) else "c.rowid",
        ).column("customer_id")
        if len(customers) == 0:
            raise InputError("no customers: import customers first")
        ids = customers.combine_chunks()
        lo = datetime.combine(since, time.min)
        hi = datetime.combine(until + timedelta(days=1), time.min)
        events = read_columns(
            conn,
            [
                Col("customer_id", "e.customer_id", "text"),
                Col("amount", "e.amount", "float"),
                Col("purchase", "CASE WHEN e.type = 'purchase' THEN 1 ELSE 0 END", "int"),
            ],
            from_sql="event e",
            where="e.occurred_at >= :lo AND e.occurred_at < :hi",
            params={"lo": lo, "hi": hi},
            chunk_key="e.id",
        )
        costs = read_columns(
            conn,
            [Col("customer_id", "d.customer_id", "text"), Col("cost", "r.cost", "float")],
            from_sql="decision d JOIN reward r ON r.decision_id = d.id",
            where="d.run_date >= :since AND d.run_date <= :until AND r.cost <> 0",
            params={"since": since, "until": until},
            chunk_key="d.id",
        )
        still_open = int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM decision d WHERE d.run_date >= :since "
                    "AND d.run_date <= :until AND d.window_end > :as_of "
                    "AND d.campaign_id IS NOT NULL AND d.\"group\" = 'test'"
                ),
                {"since": since, "until": until, "as_of": as_of},
            ).scalar_one()
        )
    n = len(ids)
    revenue, bought, outside = _per_customer(ids, events, "amount", "purchase")
    cost, _, _ = _per_customer(ids, costs, "cost", None)
    value = revenue - cost
    gc = in_global_control(
        customer_keys(ids.to_pylist(), settings.salt), settings.global_control_fraction
    )
    arm = np.where(gc, 0, 1)
    count, mean, var = group_moments(value, arm, 2)
    conv = np.bincount(arm, weights=bought > 0, minlength=2)
    _, rev_mean, _ = group_moments(revenue, arm, 2)
    _, cost_mean, _ = group_moments(cost, arm, 2)
    d = welch_diff(count[1], mean[1], var[1], count[0], mean[0], var[0], alpha=alpha)
    c = newcombe_diff(conv[1], count[1], conv[0], count[0], alpha=alpha)
    status = "ok" if min(count) >= MIN_PER_ARM else "too_small"
    notes = []
    if status != "ok":
        notes.append(
            f"fewer than {MIN_PER_ARM} customers in an arm ({int(count[0])} in the global "
            f"control group of {n}): too small to say"
        )
    if outside:
        notes.append(f"{outside:,} events of customers not in the customer table are left out")
    if still_open:
        notes.append(
            f"the costs of {still_open:,} sends whose windows are still open are not counted yet"
        )
    rest = float(count[1])
    ok = status == "ok"

    def fin(x: np.ndarray, scale: float = 1.0) -> float:
        return float(x[0]) * scale if ok else float("nan")

    return ProgrammeReport(
        as_of=as_of,
        since=since,
        until=until,
        fraction=settings.global_control_fraction,
        n_control=int(count[0]),
        n_rest=int(count[1]),
        value_control=float(mean[0]),
        value_rest=float(mean[1]),
        revenue_rest=float(rev_mean[1]),
        cost_rest=float(cost_mean[1]),
        uplift=float(d.estimate[0]),
        uplift_low=fin(d.low),
        uplift_high=fin(d.high),
        p_value=fin(d.p_value),
        conversion_control=float(conv[0] / max(count[0], 1)),
        conversion_rest=float(conv[1] / max(count[1], 1)),
        conversion_diff=float(c.estimate[0]),
        conversion_low=fin(c.low),
        conversion_high=fin(c.high),
        conversion_p=fin(c.p_value),
        incremental=float(d.estimate[0]) * rest,
        incremental_low=fin(d.low, rest),
        incremental_high=fin(d.high, rest),
        status=status,
        notes=notes,
    )


def _mature_period(engine: sa.Engine, as_of: date, since: date, until: date) -> None:
    """Mature rewards when a decision of the period has a closed window and no reward yet."""
    with engine.connect() as conn:
        pending = conn.execute(
            sa.text(
                "SELECT 1 FROM decision d WHERE d.run_date >= :since AND d.run_date <= :until "
                "AND d.window_end <= :as_of AND NOT EXISTS "
                "(SELECT 1 FROM reward r WHERE r.decision_id = d.id) LIMIT 1"
            ),
            {"since": since, "until": until, "as_of": as_of},
        ).first()
    if pending is not None:
        mature_rewards(engine, as_of=as_of)


def _per_customer(
    ids: pa.Array, table: pa.Table, amount: str, flag: str | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sums of ``amount`` (and of ``flag``) per customer of ``ids``; rows of others are counted."""
    n = len(ids)
    if table.num_rows == 0:
        return np.zeros(n), np.zeros(n), 0
    at = pc.index_in(table.column("customer_id"), value_set=ids)
    found = np.asarray(pc.is_valid(at).to_numpy(zero_copy_only=False), bool)
    pos = np.asarray(pc.fill_null(at, 0).to_numpy(zero_copy_only=False), np.int64)[found]
    amounts = np.asarray(table.column(amount).to_numpy(), np.float64)[found]
    total = np.bincount(pos, weights=amounts, minlength=n)
    flags = (
        np.bincount(
            pos, weights=np.asarray(table.column(flag).to_numpy(), np.float64)[found], minlength=n
        )
        if flag
        else np.zeros(n)
    )
    return total, flags, int((~found).sum())
