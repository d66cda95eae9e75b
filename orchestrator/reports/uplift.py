"""`orch report uplift`: what each campaign (treatment, segment) added over its control group.

Value is measured per decision (its measurement window), and the customers are the clusters: a
campaign's test/control split is a stable hash of (customer, campaign), so the customer is what
was randomized, and a customer's decisions share the customer's habits. The uplift is the test
decisions' mean value minus the control decisions' with a cluster-robust (sandwich) variance;
the conversion rates' Newcombe interval uses counts divided by their design effect. Per decision
rather than per customer total, because cooldowns and caps follow sends, so test and control
customers can get different numbers of windows: totals would measure the window count too. With
one decision per customer both are the same, and the statistics reduce to Welch and Newcombe.
Rows:

- a campaign: its test customers against its control customers;
- a treatment (``--by treatment`` or ``--treatment``): the customers who got the treatment
  against the control customers *for whom the policy had picked that treatment* (control
  decisions carry the treatment the policy chose). Comparing with the campaign's whole control
  group would mix the treatment's effect with *who* the policy picks it for (a bandit gives each
  treatment to different customers); the treatment's own control group is the same selection,
  only not sent, so the difference is the treatment's effect. Its intervals are wider, honestly.
- a segment (``--by``): the same comparison inside the segment; segments on decision dates can
  put one customer in two rows.

Statistics come from :mod:`orchestrator.measure.uplift`; this module reads and groups columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa
from scipy import stats

from orchestrator.errors import InputError
from orchestrator.measure.uplift import (
    STATUS_OK,
    ArmStats,
    cluster_moments,
    compare_arms,
    welch_diff,
)
from orchestrator.reports.data import (
    UNKNOWN,
    Outcomes,
    Segment,
    check_fields,
    check_filters,
    day_of_number,
    groups_present,
    load_outcomes,
    segments,
)

SIGNIFICANCE = 0.05
HEATMAP_FALLBACKS = ("lifecycle", "lifecycle_stage", "rfm_cell")


@dataclass
class UpliftRow:
    """One row of the report; value and uplift are per decision unless named otherwise."""

    campaign: str
    segment: dict[str, str]
    n_test: int
    n_control: int
    decisions_test: int
    decisions_control: int
    conversion_test: float
    conversion_control: float
    conversion_diff: float
    conversion_low: float
    conversion_high: float
    conversion_p: float
    conversion_q: float
    value_test: float
    value_control: float
    uplift: float
    uplift_low: float
    uplift_high: float
    p_value: float
    q_value: float
    relative: float
    relative_low: float
    relative_high: float
    incremental: float
    incremental_low: float
    incremental_high: float
    revenue_test: float
    revenue_control: float
    cost_test: float
    status: str
    note: str
    verdict: str

    @property
    def label(self) -> str:
        return " · ".join([self.campaign, *self.segment.values()])

    @property
    def segment_label(self) -> str:
        return " · ".join(self.segment.values()) or "all"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"campaign": self.campaign, **self.segment}
        for key, value in self.__dict__.items():
            if key in ("campaign", "segment"):
                continue
            out[key] = _clean(value)
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class Timeline:
    """Cumulative incremental value by decision date: ``(C, D)`` per campaign, ``(D,)`` total.

    Point ``[c, d]`` is campaign ``c``'s uplift per decision measured on the decisions made up
    to day ``d``, times its test decisions up to then; the last day equals the report's figure.
    """

    days: list[date]
    campaigns: list[str]
    incremental: np.ndarray
    low: np.ndarray
    high: np.ndarray
    total: np.ndarray
    total_low: np.ndarray
    total_high: np.ndarray


@dataclass
class UpliftReport:
    as_of: date
    since: date
    until: date
    by: list[str]
    campaign: str | None
    treatment: str | None
    rows: list[UpliftRow]
    decisions: int
    customers: int
    still_open: int
    open_until: date | None
    matured_now: int
    alpha: float
    notes: list[str] = field(default_factory=list)
    campaign_rows: list[UpliftRow] = field(default_factory=list)
    heatmap_by: list[str] = field(default_factory=list)
    heatmap_rows: list[UpliftRow] = field(default_factory=list)
    timeline: Timeline | None = None
    currency: str | None = None  # the plan's settings.currency

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "as_of": self.as_of.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": self.by,
            "campaign": self.campaign,
            "treatment": self.treatment,
            "confidence": 1 - self.alpha,
            "decisions": self.decisions,
            "customers": self.customers,
            "still_open": self.still_open,
            "open_until": self.open_until.isoformat() if self.open_until else None,
            "notes": self.notes,
            "rows": [r.as_dict() for r in self.rows],
        }


def _check_journey(engine: sa.Engine, journey: str) -> None:
    from orchestrator.storage.db import session_scope
    from orchestrator.storage.plan_repo import read_plan

    with session_scope(engine) as session:
        known = [j.id for j in read_plan(session).journeys]
    if journey not in known:
        raise InputError(
            f"--journey: no journey with id {journey!r} (journeys: {', '.join(known) or 'none'})"
        )


def _no_control(campaign: str) -> InputError:
    return InputError(
        f"campaign {campaign!r} has no control group in this period "
        "(control_fraction 0?): its uplift cannot be measured"
    )


def uplift_report(
    engine: sa.Engine,
    *,
    as_of: date,
    campaign: str | None = None,
    treatment: str | None = None,
    by: Sequence[str] = (),
    since: date | None = None,
    until: date | None = None,
    alpha: float = 0.05,
    detail: bool = False,
    journey: str | None = None,
) -> UpliftReport:
    """Uplift per campaign (× treatment, × ``by`` segments) for decisions made in the period.

    ``as_of`` is today: windows ending on or before it are closed. With ``detail`` the report
    also holds campaign-level rows, a segment breakdown for a heat map and the timeline (what
    the HTML and PNG renderers draw).
    """
    by = list(by)
    if treatment is not None and "treatment" not in by:
        by = ["treatment", *by]
    with engine.connect() as conn:
        check_fields(conn, by)
        if campaign is not None:
            check_filters(conn, campaign, treatment)
            if groups_present(conn, campaign, treatment, since, until) == {"test"}:
                raise _no_control(campaign)
    if journey is not None:
        _check_journey(engine, journey)
    data = load_outcomes(
        engine,
        as_of=as_of,
        since=since,
        until=until,
        campaign=campaign,
        treatment=treatment,
        journey=journey,
    )
    with engine.connect() as conn:
        dims = segments(conn, data, by)
        order = _campaign_order(conn, data.campaigns)
    rows = _rows(data, dims, alpha, order)
    if campaign is not None and all(r.n_control == 0 for r in rows):
        raise _no_control(campaign)
    from sqlmodel import Session

    from orchestrator.storage.plan_repo import plan_currency

    with Session(engine) as session:
        currency = plan_currency(session)
    report = UpliftReport(
        currency=currency,
        as_of=as_of,
        since=day_of_number(int(data.day.min())),
        until=day_of_number(int(data.day.max())),
        by=by,
        campaign=campaign,
        treatment=treatment,
        rows=rows,
        decisions=len(data),
        customers=int(np.count_nonzero(np.bincount(data.customer))),
        still_open=data.still_open,
        open_until=data.open_until,
        matured_now=data.matured_now,
        alpha=alpha,
    )
    report.notes = _notes(report)
    if detail:
        report.campaign_rows = rows if not by else _rows(data, [], alpha, order)
        if by:
            report.heatmap_by, report.heatmap_rows = by, rows
        else:
            with engine.connect() as conn:
                fallback = _fallback_segment(conn, data)
            if fallback is not None:
                report.heatmap_by = [fallback.name]
                report.heatmap_rows = _rows(data, [fallback], alpha, order)
        report.timeline = timeline(data, alpha, order)
    return report


def _campaign_order(conn: sa.Connection, campaigns: list[str]) -> dict[str, int]:
    """Plan order (position) of the campaigns; campaigns not in the plan after, by id."""
    planned = {
        cid: i
        for i, (cid,) in enumerate(
            conn.execute(sa.text("SELECT id FROM campaign ORDER BY position, id"))
        )
    }
    extra = sorted(c for c in campaigns if c not in planned)
    return {**planned, **{c: len(planned) + i for i, c in enumerate(extra)}}


def _fallback_segment(conn: sa.Connection, data: Outcomes) -> Segment | None:
    """A segment for the heat map when the user gave none: the first of
    :data:`HEATMAP_FALLBACKS` that some customer of the report has a value of."""
    for name in HEATMAP_FALLBACKS:
        try:
            seg = segments(conn, data, [name])[0]
        except InputError:
            continue
        known = np.array([label != UNKNOWN for label in seg.labels])
        if known[seg.codes].any():
            return seg
    return None


def _rows(
    data: Outcomes, dims: Sequence[Segment], alpha: float, order: dict[str, int]
) -> list[UpliftRow]:
    """Aggregate per (row, arm, customer), then compare the arms' value per decision, with
    customers as clusters."""
    # One integer per row: the campaign then each dimension's code, mixed radix.
    key = data.campaign.astype(np.int64)
    for dim in dims:
        key = key * len(dim.labels) + dim.codes
    row_keys, row_of = _dense_codes(key)
    n_rows = len(row_keys)
    n_cust = len(data.customer_ids)
    unit = (row_of * 2 + data.test) * n_cust + data.customer
    units, unit_of = np.unique(unit, return_inverse=True)
    n_units = len(units)
    value = np.bincount(unit_of, weights=data.value, minlength=n_units)
    converted = np.bincount(unit_of, weights=data.converted, minlength=n_units)
    decisions = np.bincount(unit_of, minlength=n_units)
    cell = units // n_cust  # row * 2 + test
    arms = cluster_moments(value, decisions, converted, cell, n_rows * 2)
    n_cells = n_rows * 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rev_mean = (
            np.bincount(
                cell,
                weights=np.bincount(unit_of, weights=data.revenue, minlength=n_units),
                minlength=n_cells,
            )
            / arms.n
        )
        cost_mean = (
            np.bincount(
                cell,
                weights=np.bincount(unit_of, weights=data.cost, minlength=n_units),
                minlength=n_cells,
            )
            / arms.n
        )
    t, c = slice(1, None, 2), slice(0, None, 2)
    test, control = (
        ArmStats(
            arms.n[side],
            arms.mean[side],
            arms.var[side],
            arms.conversions[side],
            arms.clusters[side] if arms.clusters is not None else None,
            arms.design_effect[side] if arms.design_effect is not None else None,
        )
        for side in (t, c)
    )
    cmp = compare_arms(test, control, alpha=alpha)
    # Decode each row key back to its campaign and labels.
    parts = []
    rest = row_keys.copy()
    for dim in reversed(dims):
        parts.append(rest % len(dim.labels))
        rest = rest // len(dim.labels)
    parts.reverse()
    rows = []
    for i in range(n_rows):
        segment = {dim.name: dim.labels[int(p[i])] for dim, p in zip(dims, parts, strict=True)}
        status = str(cmp.status[i])
        q = float(cmp.q_value[i])
        uplift = float(cmp.value.estimate[i])
        if status != STATUS_OK:
            verdict = {
                "too_small": "too small to say",
                "no_control": "no control group",
                "no_conversions": "no conversions",
            }[status]
        elif q <= SIGNIFICANCE:
            verdict = "gain" if uplift > 0 else "loss"
        else:
            verdict = "no clear effect"
        rows.append(
            UpliftRow(
                campaign=data.campaigns[int(rest[i])],
                segment=segment,
                n_test=int(test.k[i]),
                n_control=int(control.k[i]),
                decisions_test=int(test.n[i]),
                decisions_control=int(control.n[i]),
                conversion_test=float(test.rate[i]),
                conversion_control=float(control.rate[i]),
                conversion_diff=float(cmp.conversion.estimate[i]),
                conversion_low=float(cmp.conversion.low[i]),
                conversion_high=float(cmp.conversion.high[i]),
                conversion_p=float(cmp.conversion.p_value[i]),
                conversion_q=float(cmp.q_conversion[i]),
                value_test=float(test.mean[i]),
                value_control=float(control.mean[i]),
                uplift=uplift,
                uplift_low=float(cmp.value.low[i]),
                uplift_high=float(cmp.value.high[i]),
                p_value=float(cmp.value.p_value[i]),
                q_value=q,
                relative=float(cmp.relative[0][i]),
                relative_low=float(cmp.relative[1][i]),
                relative_high=float(cmp.relative[2][i]),
                incremental=float(cmp.incremental.estimate[i]),
                incremental_low=float(cmp.incremental.low[i]),
                incremental_high=float(cmp.incremental.high[i]),
                revenue_test=float(rev_mean[t][i]),
                revenue_control=float(rev_mean[c][i]),
                cost_test=float(cost_mean[t][i]),
                status=status,
                note=str(cmp.reason[i]),
                verdict=verdict,
            )
        )
    rows.sort(key=lambda r: (order.get(r.campaign, len(order)), r.campaign))
    return rows


def _dense_codes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` without sorting when the keys span a small range."""
    lo, hi = int(key.min()), int(key.max())
    if hi - lo > 4 * len(key) + 1_000_000:
        return np.unique(key, return_inverse=True)
    present = np.bincount(key - lo) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, rank[key - lo]


def timeline(data: Outcomes, alpha: float, order: dict[str, int]) -> Timeline:
    """Cumulative incremental value per campaign by decision date (see :class:`Timeline`).

    The clustered sums up to each day are exact without a pass per day: when a customer with
    ``n`` decisions worth ``S`` gets one more worth ``v``, ``ΣS²`` gains ``2 S v + v²``,
    ``ΣSn`` gains ``S + v (n + 1)`` and ``Σn²`` gains ``2 n + 1``.
    """
    n_camp = len(data.campaigns)
    d0 = int(data.day.min())
    n_days = int(data.day.max()) - d0 + 1
    n_cust = len(data.customer_ids)
    group = data.campaign * 2 + data.test
    key = group * n_cust + data.customer
    sort = np.lexsort((data.day, key))
    k, v = key[sort], data.value[sort]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    position = np.arange(len(k))
    start = np.maximum.accumulate(np.where(first, position, 0))
    run = np.cumsum(v)
    before = (run - v) - (run[start] - v[start])  # the customer's value before this decision
    seen = (position - start).astype(np.float64)  # the customer's decisions before this one
    cell = group[sort] * n_days + (data.day[sort] - d0)
    size = n_camp * 2 * n_days

    def cum(weights: np.ndarray | None) -> np.ndarray:
        total = np.bincount(cell, weights=weights, minlength=size).astype(np.float64)
        return np.cumsum(total.reshape(n_camp, 2, n_days), axis=2)

    n = cum(None)
    clusters = cum(first.astype(np.float64))
    s = cum(v)
    ss = cum(2 * before * v + v * v)
    sn = cum(before + v * (seen + 1))
    nn = cum(2 * seen + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        resid = np.maximum(ss - 2 * mean * sn + mean * mean * nn, 0.0)
        var = clusters / (clusters - 1) * resid / n  # N · Var(mean)
    diff = welch_diff(
        n[:, 1].ravel(),
        mean[:, 1].ravel(),
        var[:, 1].ravel(),
        n[:, 0].ravel(),
        mean[:, 0].ravel(),
        var[:, 0].ravel(),
        alpha=alpha,
        k1=clusters[:, 1].ravel(),
        k0=clusters[:, 0].ravel(),
    )
    n_test = n[:, 1]
    inc = diff.estimate.reshape(n_camp, n_days) * n_test
    low = diff.low.reshape(n_camp, n_days) * n_test
    high = diff.high.reshape(n_camp, n_days) * n_test
    se = diff.se.reshape(n_camp, n_days) * n_test
    usable = np.isfinite(inc) & np.isfinite(se)
    total = np.where(usable, inc, 0.0).sum(axis=0)
    total_se = np.sqrt(np.where(usable, se * se, 0.0).sum(axis=0))
    z = stats.norm.ppf(1 - alpha / 2)
    rank = np.argsort([order.get(c, len(order)) for c in data.campaigns], kind="stable")
    return Timeline(
        days=[day_of_number(d0 + i) for i in range(n_days)],
        campaigns=[data.campaigns[i] for i in rank],
        incremental=inc[rank],
        low=low[rank],
        high=high[rank],
        total=total,
        total_low=total - z * total_se,
        total_high=total + z * total_se,
    )


def _notes(report: UpliftReport) -> list[str]:
    notes = []
    if report.still_open:
        notes.append(
            f"{report.still_open:,} decisions of the period are still inside their measurement "
            f"window (until {report.open_until}) and are not counted yet"
        )
    small = sum(r.status != STATUS_OK for r in report.rows)
    if small:
        notes.append(
            f"{small} of {len(report.rows)} rows cannot be measured (too few customers, no "
            "control group or no conversions): they show counts, not intervals"
        )
    measured = sum(r.status == STATUS_OK for r in report.rows)
    if measured > 1:
        notes.append(
            f"p-values are adjusted for the {measured} rows compared (Benjamini-Hochberg "
            "q-values); a gain or loss is called when q ≤ 0.05"
        )
    return notes
