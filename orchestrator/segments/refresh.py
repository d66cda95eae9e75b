"""`orch segments refresh`: compute every customer's features as of a day and record segment moves.

1. Read the purchase and return events up to the end of the as-of day as columns (SQLite: one
   table scan fetched in chunks; PostgreSQL: ``COPY ... TO STDOUT`` parsed by Arrow). Grouping
   by customer and day happens in numpy: SQLite would sort ten million rows to group them.
2. Summarize per customer (:mod:`summary`), then the pure cores: RFM, lifecycle, BG/NBD and
   Gamma-Gamma, behaviour.
3. In one transaction: replace ``customer_features`` (one row per customer, ``as_of`` = the
   day), close and open ``segment_history`` rows of customers whose lifecycle stage or RFM cell
   changed (set-based SQL against the new features), and store the fitted model in
   ``plan_setting`` under ``segments_model``.

The customers are those of the ``customer`` table plus anyone with a purchase or return event
(events may arrive before their customer record).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.features import LIFECYCLE_STAGES
from orchestrator.segments import basket, behaviour
from orchestrator.segments.config import SegmentConfig
from orchestrator.segments.events import (
    has_events,
    latest_event_day,
    read_customer_ids,
    read_events,
)
from orchestrator.segments.history import SEGMENT_KINDS, last_history_day, record_history
from orchestrator.segments.lifecycle import lifecycle_stages
from orchestrator.segments.micro import (
    MicroSegments,
    behaviour_features,
    fit_micro_segments,
    mix,
)
from orchestrator.segments.model_store import MODEL_VERSION, json_safe, load_model, store_model
from orchestrator.segments.rfm import RfmScores, score_rfm
from orchestrator.segments.summary import PurchaseHistory, summarize
from orchestrator.segments.value import (
    ValuePredictions,
    fit_value_model,
    model_report,
    predict_value,
)
from orchestrator.storage.bulk import (
    advisory_lock,
    begin_write,
    insert_arrow,
    sqlite_cache,
)
from orchestrator.storage.models import utcnow

STEPS = ("check", "read", "summarize", "model", "score", "cluster", "write", "history")
MIX_TOP = 8  # categories (channels) whose purchase shares the micro-segments see
EPOCH = date(1970, 1, 1)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh computed and changed."""

    as_of: date
    customers: int
    purchasers: int
    repeat_customers: int
    lifecycle: dict[str, int]
    rfm: dict[str, int]
    history_changes: dict[str, int]  # per kind: customers who entered a new segment
    model: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


# --- ordering of refreshes ------------------------------------------------------------------


def last_refresh_day(conn: sa.Connection) -> date | None:
    """The latest day a refresh ran for (from the stored model and the segment history)."""
    model = load_model(conn)
    days = [d for d in (last_history_day(conn),) if d is not None]
    if model is not None and model.get("as_of"):
        days.append(date.fromisoformat(model["as_of"]))
    return max(days) if days else None


def _check_forward(conn: sa.Connection, as_of: date) -> None:
    last = last_refresh_day(conn)
    if last is not None and as_of < last:
        raise InputError(
            f"--as-of {as_of} is before the last refresh ({last}): segment history only moves "
            f"forward (refresh as of {last} or later)"
        )


# --- computing -------------------------------------------------------------------------------


def _codes(values: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes of a string column (-1 for null) and the dictionary."""
    encoded = values.combine_chunks().dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, encoded.dictionary.to_pylist()


def _top_codes(codes: np.ndarray, names: list[str], top: int) -> tuple[np.ndarray, list[str]]:
    """Codes of the ``top`` most frequent values renumbered 0.., every other value -1."""
    counts = np.bincount(codes[codes >= 0], minlength=len(names))
    keep = [int(c) for c in np.argsort(-counts, kind="stable")[:top] if counts[c] > 0]
    remap = np.full(len(names) + 1, -1, dtype=np.int32)
    remap[keep] = np.arange(len(keep))
    return remap[np.where(codes >= 0, codes, len(names))], [names[c] for c in keep]


def _float_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float64(), from_pandas=True)  # NaN becomes null


def _int_array(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), type=pa.int64(), mask=~valid)


def _names(codes: np.ndarray, names: list[str] | tuple[str, ...]) -> pa.Array:
    """Strings for codes (-1 for null)."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.string())).cast(
        pa.string()
    )


def _count(codes: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, int]:
    counts = np.bincount(codes[codes >= 0], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts, strict=True) if c}


def refresh_segments(
    engine: sa.Engine,
    *,
    as_of: date | None = None,
    config: SegmentConfig | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> RefreshResult:
    """Compute every customer's features as of the end of ``as_of`` (default: the day of the
    latest event), write them and record segment changes; nothing is written on bad input.
    Without ``config``, the plan's ``settings.segments`` (or the defaults)."""
    if config is None:
        config = plan_segment_config(engine)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        timings[name] = time.perf_counter() - clock
        clock = time.perf_counter()
        if progress is not None:
            progress(STEPS.index(name) + 1, len(STEPS))

    with engine.connect() as conn:
        if as_of is None:
            as_of = latest_event_day(conn)
            if as_of is None:
                raise InputError("no events yet: import events first (`orch events import FILE`)")
        _check_forward(conn, as_of)
        end = as_of + timedelta(days=1)
        if not has_events(conn, end):
            raise InputError(
                f"no events up to {as_of}: import events first (`orch events import FILE`) "
                "or pick a later --as-of"
            )
        step("check")
        previous = load_model(conn)
        events = read_events(conn, end)
        customer_ids = read_customer_ids(conn)
        step("read")

    # Customers: the customer table plus anyone in the events, sorted (the key order).
    ids = pc.unique(pa.concat_arrays([customer_ids, events.column("customer_id").combine_chunks()]))
    ids = ids.take(pc.sort_indices(ids))
    n = len(ids)
    owner = pc.index_in(events.column("customer_id"), value_set=ids)
    owner_np = owner.to_numpy(zero_copy_only=False).astype(np.int64)
    day_np = events.column("day").cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    is_return = events.column("is_return").to_numpy(zero_copy_only=False).astype(bool)
    amount = events.column("amount").to_numpy(zero_copy_only=False)
    as_of_day = (as_of - EPOCH).days
    history = summarize(
        owner_np,
        day_np,
        amount,
        is_return,
        n=n,
        as_of=as_of_day,
        gap_days=config.lifecycle.reactivation_gap_days,
    )
    buy = ~is_return
    b_owner, b_day = owner_np[buy], day_np[buy]
    discount = events.column("discount").filter(pa.array(buy)).to_numpy(zero_copy_only=False)
    affinity = behaviour.discount_affinity(b_owner, discount.astype(np.float64), n)
    depth = behaviour.mean_discount(b_owner, discount.astype(np.float64), n)
    cat_codes, cat_names = _codes(events.column("category").filter(pa.array(buy)))
    ch_codes, ch_names = _codes(events.column("channel").filter(pa.array(buy)))
    category = behaviour.preferred(b_owner, cat_codes, b_day, n)
    channel = behaviour.preferred(b_owner, ch_codes, b_day, n)
    mixes = (
        mix(b_owner, cat_codes, cat_names, n, MIX_TOP),
        mix(b_owner, ch_codes, ch_names, n, MIX_TOP),
    )
    top_codes, top_names = _top_codes(cat_codes, cat_names, basket.MAX_CATEGORIES)
    bought = basket.baskets(b_owner, top_codes, n, len(top_names))
    del events, owner
    step("summarize")

    # Refreshes are daily and the base changes little from one day to the next: the last
    # fit is where the likelihood's maximum was yesterday, a good place to start.
    model = fit_value_model(history, config.model, bgnbd_init=_previous_bgnbd(previous, config))
    values = predict_value(model, history)
    step("model")

    stages = lifecycle_stages(history.recency, history.tenure, history.comeback, config.lifecycle)
    scores = score_rfm(history.recency, history.repeats, history.net_spend, config.rfm)
    step("score")

    micro = None
    if config.micro.enabled:
        micro = fit_micro_segments(
            behaviour_features(
                history.recency,
                history.repeats.astype(np.float64),
                history.net_spend,
                history.tenure,
                affinity,
                *mixes,
            ),
            stages,
            LIFECYCLE_STAGES,
            config.micro,
            (previous or {}).get("micro_segments"),
        )
    del mixes
    groups, group_labels = (
        (micro.codes, list(micro.labels)) if micro is not None else (stages, list(LIFECYCLE_STAGES))
    )
    rules = basket.count_rules(bought, groups, len(group_labels), top_names)
    next_code, next_confidence = basket.next_categories(bought, groups, rules)
    del bought
    step("cluster")

    features = _features_table(
        ids,
        as_of,
        history,
        stages,
        scores,
        values,
        affinity,
        _names(category, cat_names),
        _names(channel, ch_names),
        micro,
        (_names(next_code, top_names), next_confidence),
        depth,
        now or utcnow(),
    )
    report = model_report(model)
    bought = history.bought
    result_model: dict[str, Any] = json_safe(
        {
            "version": MODEL_VERSION,
            "as_of": as_of.isoformat(),
            "config": config.model_dump(mode="json"),
            "customers": n,
            "purchasers": int(bought.sum()),
            "repeat_customers": int((history.repeats > 0).sum()),
            **report,
            "micro_segments": micro.to_json() if micro is not None else None,
            "cross_sell": basket.top_rules(rules, group_labels),
        }
    )
    changes: dict[str, int] = {}
    with engine.begin() as conn:
        begin_write(conn)
        advisory_lock(conn, "orch-segments-refresh")
        _check_forward(conn, as_of)
        with sqlite_cache(conn):
            conn.exec_driver_sql("DELETE FROM customer_features")
            insert_arrow(conn, "customer_features", features)
            step("write")
            for kind in SEGMENT_KINDS:
                changes[kind] = record_history(conn, kind, as_of)
        store_model(conn, result_model)
    step("history")
    return RefreshResult(
        as_of=as_of,
        customers=n,
        purchasers=int(bought.sum()),
        repeat_customers=int((history.repeats > 0).sum()),
        lifecycle=_count(stages, LIFECYCLE_STAGES),
        rfm=_count(scores.cell, scores.names),
        history_changes=changes,
        model=result_model,
        timings=timings,
    )


def _features_table(
    ids: pa.Array,
    as_of: date,
    history: PurchaseHistory,
    stages: np.ndarray,
    scores: RfmScores,
    values: ValuePredictions,
    affinity: np.ndarray,
    category: pa.Array,
    channel: pa.Array,
    micro: MicroSegments | None,
    next_category: tuple[pa.Array, np.ndarray],
    depth: np.ndarray,
    now: datetime,
) -> pa.Table:
    n = len(ids)
    bought = history.bought
    return pa.table(
        {
            "customer_id": ids,
            "as_of": pa.array(np.full(n, np.datetime64(as_of, "D")), pa.date32()),
            "recency_days": _float_array(history.recency),
            "frequency": _int_array(history.repeats, bought),
            "monetary": _float_array(history.net_spend),
            "tenure_days": _float_array(history.tenure),
            "lifecycle_stage": _names(stages, LIFECYCLE_STAGES),
            "rfm_cell": _names(scores.cell, scores.names),
            "r_score": _int_array(scores.r, bought),
            "f_score": _int_array(scores.f, bought),
            "m_score": _int_array(scores.m, bought),
            "p_alive": _float_array(values.p_alive),
            "expected_purchases": _float_array(values.expected_purchases),
            "expected_value": _float_array(values.expected_value),
            "churn_risk": _float_array(values.churn_risk),
            "p_buy_7d": _float_array(values.p_buy_7d),
            "p_buy_30d": _float_array(values.p_buy_30d),
            "days_to_next_purchase": _float_array(values.days_to_next_purchase),
            "discount_affinity": _float_array(affinity),
            "mean_discount": _float_array(depth),
            "mean_order_value": _float_array(
                np.where(bought, history.net_spend / (np.maximum(history.repeats, 0) + 1.0), np.nan)
            ),
            "preferred_category": category,
            "preferred_channel": channel,
            "micro_segment": (
                _names(micro.codes, micro.labels) if micro is not None else pa.nulls(n, pa.string())
            ),
            "next_category": next_category[0],
            "next_category_confidence": _float_array(next_category[1]),
            "updated_at": pa.array(np.full(n, np.datetime64(now, "us")), pa.timestamp("us")),
        }
    )


def plan_segment_config(engine: sa.Engine) -> SegmentConfig:
    """The segmentation settings of the plan (its ``settings.segments``), else the defaults."""
    from sqlmodel import Session

    from orchestrator.segments.config import load_config
    from orchestrator.storage.plan_repo import plan_segments

    with Session(engine) as session:
        base = plan_segments(session)
    return load_config(base=base) if base else SegmentConfig()


def _previous_bgnbd(previous: dict[str, Any] | None, config: SegmentConfig) -> Any:
    """The BG/NBD parameters of the stored model, if it was fitted in the same time unit."""
    from orchestrator.segments.bgnbd import BgNbdParams

    if not previous or previous.get("time_unit") != config.model.time_unit:
        return None
    fit = previous.get("bgnbd")
    if not isinstance(fit, dict) or not all(k in fit for k in ("r", "alpha", "a", "b")):
        return None
    values = [float(fit[k]) for k in ("r", "alpha", "a", "b")]
    if not all(np.isfinite(v) and v > 0 for v in values):
        return None
    return BgNbdParams(*values)
