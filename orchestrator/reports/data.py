"""Columnar inputs of the reports: decisions joined to their outcomes, and customer segments.

Outcomes come from the ``reward`` table only: :func:`load_outcomes` runs
:func:`orchestrator.rewards.mature_rewards` when a decision of the period has a closed window but
no reward yet, then reads the rewards again. Decisions whose window is still open are counted,
not measured.

Segments (``--by``) are resolved per decision: ``treatment``; ``lifecycle`` and ``rfm``, the
segment the decision's targeting saw: the customer's ``segment_history`` row on the date of the
refresh its run decided with (``run.segments_as_of``; ``valid_from`` inclusive, ``valid_to``
exclusive). A refresh made after the day's purchases moves customers a decision never saw in
that segment (a winback that targets at-risk customers would show "active" rows); runs that did
not record it (and imported decisions) are read on their run date. Then: a computed feature of
``customer_features``; or a customer attribute. Numbers are cut at the quintiles of the customers
in the report; text keeps its most frequent values and groups the rest as ``other``; a missing
value is ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import CampaignNotFound, InputError, NotFound
from orchestrator.features import COMPUTED_FEATURES
from orchestrator.reports import columnar
from orchestrator.reports.columnar import (
    Col,
    is_postgres,
    json_field,
    read_columns,
    read_in_background,
    sqlite_file,
)
from orchestrator.rewards import mature_rewards
from orchestrator.segments.history import SEGMENT_KINDS as HISTORY_KINDS

SEGMENT_KINDS = tuple(HISTORY_KINDS)  # recorded in segment_history: the value at decision time
SPECIAL = ("treatment", "step", *SEGMENT_KINDS)
MAX_LEVELS = 20
N_QUANTILES = 5
UNKNOWN = "unknown"
OTHER = "other"
_EPOCH = date(1970, 1, 1)


def day_number(day: date) -> int:
    return (day - _EPOCH).days


def day_of_number(n: int) -> date:
    return _EPOCH + timedelta(days=int(n))


@dataclass
class Outcomes:
    """Matured decisions of a period, ``m`` of them, as columns.

    ``customer``, ``campaign`` and ``treatment`` are codes into ``customer_ids``,
    ``campaigns`` and ``treatments``; ``day`` is the decision date as days since 1970-01-01.
    """

    customer_ids: pa.Array
    campaigns: list[str]
    treatments: list[str]
    customer: np.ndarray
    campaign: np.ndarray
    treatment: np.ndarray
    day: np.ndarray
    test: np.ndarray
    value: np.ndarray
    revenue: np.ndarray
    cost: np.ndarray
    converted: np.ndarray
    still_open: int = 0
    open_until: date | None = None
    matured_now: int = 0
    step: np.ndarray | None = None  # journey step codes into ``steps`` (with --journey)
    steps: list[str] | None = None

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, rows: np.ndarray) -> Outcomes:
        """The decisions at ``rows`` (same code tables)."""
        return Outcomes(
            customer_ids=self.customer_ids,
            campaigns=self.campaigns,
            treatments=self.treatments,
            customer=self.customer[rows],
            campaign=self.campaign[rows],
            treatment=self.treatment[rows],
            day=self.day[rows],
            test=self.test[rows],
            value=self.value[rows],
            revenue=self.revenue[rows],
            cost=self.cost[rows],
            converted=self.converted[rows],
            still_open=self.still_open,
            open_until=self.open_until,
            matured_now=self.matured_now,
        )


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.fill_null(arr, "").dictionary_encode()
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64), encoded.dictionary


def _days(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.int32()).to_numpy(zero_copy_only=False), np.int64)


def known_campaigns(conn: sa.Connection) -> set[str]:
    """Campaign ids of the plan (archived included)."""
    return {r[0] for r in conn.execute(sa.text("SELECT id FROM campaign"))}


def check_filters(conn: sa.Connection, campaign: str | None, treatment: str | None) -> None:
    """Raise a one-line error for a campaign or treatment nobody knows."""
    if treatment is not None and campaign is None:
        raise InputError("--treatment needs --campaign (treatment ids belong to a campaign)")
    if campaign is None:
        return
    logged = conn.execute(
        sa.text("SELECT 1 FROM decision WHERE campaign_id = :c LIMIT 1"), {"c": campaign}
    ).first()
    if campaign not in known_campaigns(conn) and logged is None:
        raise CampaignNotFound(campaign)
    if treatment is None:
        return
    planned = conn.execute(
        sa.text("SELECT 1 FROM treatment WHERE campaign_id = :c AND id = :t"),
        {"c": campaign, "t": treatment},
    ).first()
    used = conn.execute(
        sa.text("SELECT 1 FROM decision WHERE campaign_id = :c AND treatment_id = :t LIMIT 1"),
        {"c": campaign, "t": treatment},
    ).first()
    if planned is None and used is None:
        raise NotFound(f"campaign {campaign!r} has no treatment {treatment!r}")


def groups_present(
    conn: sa.Connection,
    campaign: str,
    treatment: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> set[str]:
    """The groups (test, control) the campaign's decisions in the period have: checked before
    :func:`load_outcomes` matures any reward, so a report refused for want of a control group
    writes nothing."""
    sql = 'SELECT DISTINCT d."group" FROM decision d WHERE d.campaign_id = :c'
    params: dict[str, object] = {"c": campaign}
    for clause, key, value in (
        (" AND d.treatment_id = :t", "t", treatment),
        (" AND d.run_date >= :since", "since", since),
        (" AND d.run_date <= :until", "until", until),
    ):
        if value is not None:
            sql += clause
            params[key] = value
    return {str(r[0]) for r in conn.execute(sa.text(sql), params)}


def load_outcomes(
    engine: sa.Engine,
    *,
    as_of: date,
    since: date | None = None,
    until: date | None = None,
    campaign: str | None = None,
    treatment: str | None = None,
    journey: str | None = None,
) -> Outcomes:
    """Campaign decisions (not "send nothing") made in ``[since, until]``, with their rewards;
    with ``journey``, only that journey's steps.

    Matures rewards first when some closed window has none (:func:`mature_rewards` is
    idempotent). Raises :class:`InputError` when the period holds no decision at all.
    """
    if since and until and since > until:
        raise InputError(f"--since {since} is after --until {until}")
    where: list[str] = []
    params: dict[str, object] = {}
    if since:
        where.append("d.run_date >= :since")
        params["since"] = since
    if until:
        where.append("d.run_date <= :until")
        params["until"] = until
    if campaign:
        where.append("d.campaign_id = :campaign")
        params["campaign"] = campaign
    if treatment:
        where.append("d.treatment_id = :treatment")
        params["treatment"] = treatment
    if journey:
        where.append("d.journey_id = :journey")
        params["journey"] = journey
    # Chunks are sized on the filters alone: counting "campaign_id IS NOT NULL" scans an index.
    size_where = " AND ".join(where)
    cond = " AND ".join(["d.campaign_id IS NOT NULL", *where])
    with engine.connect() as conn:
        check_filters(conn, campaign, treatment)
        background = _rewards_in_background(engine, conn) if not size_where else None
        decisions = read_columns(
            conn,
            [
                Col("id", "d.id", "int"),
                Col("customer_id", "d.customer_id", "text"),
                Col("run_date", "d.run_date", "date"),
                Col("campaign_id", "d.campaign_id", "text"),
                Col("treatment_id", "d.treatment_id", "text"),
                Col("test", "CASE WHEN d.\"group\" = 'test' THEN 1 ELSE 0 END", "int"),
                Col("window_end", "d.window_end", "date"),
                Col("journey_step", "COALESCE(d.journey_step, 0)", "int"),
            ],
            from_sql="decision d",
            where=cond,
            params=params,
            chunk_key="d.id",
            size_where=size_where,
        )
        rewards_table = background() if background else None
        if decisions.num_rows == 0:
            scope = _scope(campaign, treatment, since, until)
            if journey:
                scope = f"of journey {journey!r} " + scope.removeprefix("for any campaign ")
            raise InputError(f"no decisions {scope}")
        ids = np.asarray(decisions.column("id").to_numpy(), np.int64)
        if rewards_table is not None:
            rewards = _reward_arrays(rewards_table)
        else:
            rewards = _read_rewards(conn, ids, cond, params)
    window_end = _days(decisions.column("window_end").fill_null(date.max))
    closed = window_end <= day_number(as_of)
    r_ids, r_cols = rewards
    has = _matched(ids, r_ids)
    matured_now = 0
    if (closed & ~has).any():
        matured_now = mature_rewards(engine, as_of=as_of).matured
        with engine.connect() as conn:
            r_ids, r_cols = _read_rewards(conn, ids, cond, params)
        has = _matched(ids, r_ids)
    # As of ``as_of``, a window ending later is open even if a later run matured it already.
    measured = has & closed
    keep = np.flatnonzero(measured)
    still_open = int((~measured).sum())
    open_until = day_of_number(int(window_end[~measured].max())) if still_open else None
    if len(keep) == 0:
        raise InputError(
            f"no measurement window has closed yet {_scope(campaign, treatment, since, until)}: "
            f"{still_open:,} decisions stay open until {open_until}"
        )
    if len(keep) == len(ids) and np.array_equal(ids, r_ids):
        pos = keep  # the common case: every decision matured, read in id order
    else:
        pos = np.searchsorted(r_ids, ids[keep])
    if len(keep) < len(ids):
        decisions = decisions.take(pa.array(keep))
    customer, customer_ids = _codes(decisions.column("customer_id"))
    campaign_codes, campaigns = _codes(decisions.column("campaign_id"))
    treatment_codes, treatments = _codes(decisions.column("treatment_id"))
    raw_steps = np.asarray(decisions.column("journey_step").to_numpy(), np.int64)
    step_values = sorted(set(raw_steps.tolist()))
    step_codes = np.searchsorted(np.asarray(step_values), raw_steps)
    return Outcomes(
        customer_ids=customer_ids,
        campaigns=campaigns.to_pylist(),
        treatments=treatments.to_pylist(),
        customer=customer,
        campaign=campaign_codes,
        treatment=treatment_codes,
        day=_days(decisions.column("run_date")),
        test=np.asarray(decisions.column("test").to_numpy(), np.int64) == 1,
        value=r_cols["value"][pos],
        revenue=r_cols["value"][pos] + r_cols["cost"][pos],
        cost=r_cols["cost"][pos],
        converted=r_cols["converted"][pos],
        still_open=still_open,
        open_until=open_until,
        matured_now=matured_now,
        step=step_codes,
        steps=[f"step {k}" if k else "not a journey step" for k in step_values],
    )


def _scope(
    campaign: str | None, treatment: str | None, since: date | None, until: date | None
) -> str:
    what = f"for campaign {campaign!r}" if campaign else "for any campaign"
    if treatment:
        what += f", treatment {treatment!r}"
    if since and until:
        return f"{what} between {since} and {until}"
    if since:
        return f"{what} since {since}"
    if until:
        return f"{what} until {until}"
    return what


def _matched(ids: np.ndarray, reward_ids: np.ndarray) -> np.ndarray:
    if np.array_equal(ids, reward_ids):
        return np.ones(len(ids), dtype=bool)
    if len(reward_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    pos = np.minimum(np.searchsorted(reward_ids, ids), len(reward_ids) - 1)
    return reward_ids[pos] == ids


REWARD_COLS = (
    Col("decision_id", "r.decision_id", "int"),
    Col("value", "r.value", "money"),
    Col("cost", "r.cost", "money"),
    Col("converted", "r.converted", "bool"),
)


def _rewards_in_background(engine: sa.Engine, conn: sa.Connection) -> Callable[[], pa.Table] | None:
    """Every decision is wanted: read all rewards in a worker while the decisions are read."""
    lo, hi = conn.execute(sa.text("SELECT min(id), max(id) FROM decision")).one()
    if lo is None or sqlite_file(engine) is None or hi - lo + 1 < columnar.BACKGROUND_MIN_ROWS:
        return None
    return read_in_background(
        engine,
        REWARD_COLS,
        rows=hi - lo + 1,
        from_sql="reward r",
        where="r.decision_id >= :lo AND r.decision_id <= :hi",
        params={"lo": lo, "hi": hi},
        chunk_key="r.decision_id",
        size_where="",
    )


def _read_rewards(
    conn: sa.Connection, ids: np.ndarray, cond: str, params: dict[str, object]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rewards of the decisions ``ids``: sorted decision ids and their columns.

    On SQLite a join costs a B-tree search per decision; when the decisions are a good share of
    their id range, scanning the rewards of that range and matching in numpy is several times
    faster.
    """
    cols = REWARD_COLS
    lo, hi = int(ids.min()), int(ids.max())
    if not is_postgres(conn) and len(ids) >= 0.25 * (hi - lo + 1):
        table = read_columns(
            conn,
            cols,
            from_sql="reward r",
            where="r.decision_id >= :lo AND r.decision_id <= :hi",
            params={"lo": lo, "hi": hi},
            chunk_key="r.decision_id",
            size_where="",
        )
    else:
        table = read_columns(
            conn,
            cols,
            from_sql="decision d JOIN reward r ON r.decision_id = d.id",
            where=cond,
            params=params,
            chunk_key="d.id",
        )
    return _reward_arrays(table)


def _reward_arrays(table: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r_ids = np.asarray(table.column("decision_id").to_numpy(), np.int64)
    out = {
        name: np.asarray(table.column(name).to_numpy(zero_copy_only=False))
        for name in ("value", "cost", "converted")
    }
    out["converted"] = out["converted"].astype(bool)
    if len(r_ids) > 1 and not (r_ids[1:] > r_ids[:-1]).all():  # SQLite reads come sorted
        order = np.argsort(r_ids, kind="stable")
        r_ids = r_ids[order]
        out = {name: col[order] for name, col in out.items()}
    return r_ids, out


# --- segments ---------------------------------------------------------------------------------


@dataclass
class Segment:
    """One ``--by`` dimension: a label code ``(m,)`` per decision, and the labels."""

    name: str
    codes: np.ndarray
    labels: list[str]
    kind: str  # treatment | segment | feature | attribute
    numeric: bool = False
    notes: list[str] = field(default_factory=list)


def attribute_types(conn: sa.Connection) -> dict[str, str]:
    return {
        name: dtype
        for name, dtype in conn.execute(sa.text("SELECT name, dtype FROM customer_attribute"))
    }


def available_fields(conn: sa.Connection) -> tuple[dict[str, str], dict[str, str]]:
    """(computed features, customer attributes), each name -> type."""
    return dict(COMPUTED_FEATURES), attribute_types(conn)


def _unknown_field(name: str, features: dict[str, str], attributes: dict[str, str]) -> InputError:
    attrs = ", ".join(sorted(attributes)) or "none"
    return InputError(
        f"unknown --by field {name!r}: use treatment, lifecycle, rfm, a computed feature "
        f"({', '.join(sorted(features))}) or a customer attribute ({attrs})"
    )


def check_fields(conn: sa.Connection, names: Sequence[str]) -> None:
    """Raise a one-line error for an unknown or unusable ``--by`` field."""
    features, attributes = available_fields(conn)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"--by names {name!r} twice")
        seen.add(name)
        if name in SPECIAL or name in features:
            continue
        if name not in attributes:
            raise _unknown_field(name, features, attributes)
        if attributes[name] == "date":
            raise InputError(
                f"--by {name!r} is a date attribute: group by a bool, number or text field"
            )


def customer_values(conn: sa.Connection, customer_ids: pa.Array, name: str) -> tuple[pa.Array, str]:
    """Each customer's value of a feature or attribute, ``(k,)`` aligned with ``customer_ids``.

    Returns the values (null where unknown) and the field type (number | string | bool).
    """
    return customer_columns(conn, customer_ids, [name])[name]


def customer_columns(
    conn: sa.Connection, customer_ids: pa.Array, names: Sequence[str]
) -> dict[str, tuple[pa.Array, str]]:
    """Several features and attributes at once (one read per table), see :func:`customer_values`."""
    features, attributes = available_fields(conn)
    for name in names:
        if name not in features and name not in attributes:
            raise _unknown_field(name, features, attributes)
    out: dict[str, tuple[pa.Array, str]] = {}
    wanted_f = [n for n in names if n in features]
    wanted_a = [n for n in names if n not in features]
    pg = is_postgres(conn)
    if wanted_f:
        table = read_columns(
            conn,
            [Col("customer_id", "f.customer_id", "text")]
            + [Col(f"v{i}", f"f.{n}", _col_kind(features[n])) for i, n in enumerate(wanted_f)],
            from_sql="customer_features f",
            chunk_key="0" if pg else "f.rowid",
        )
        for i, name in enumerate(wanted_f):
            values = table.column(f"v{i}").combine_chunks()
            out[name] = (align(table.column("customer_id"), values, customer_ids), features[name])
    if wanted_a:
        table = read_columns(
            conn,
            [Col("customer_id", "c.customer_id", "text")]
            + [
                Col(f"v{i}", json_field(conn, "c.attributes", n), "text")
                for i, n in enumerate(wanted_a)
            ],
            from_sql="customer c",
            chunk_key="0" if pg else "c.rowid",
        )
        for i, name in enumerate(wanted_a):
            kind = attributes[name]
            values = table.column(f"v{i}").combine_chunks()
            if kind == "number":
                values = _to_float(values)
            out[name] = (align(table.column("customer_id"), values, customer_ids), kind)
    return out


def align(keys: pa.ChunkedArray | pa.Array, values: pa.Array, customer_ids: pa.Array) -> pa.Array:
    """``values`` given for ``keys`` rearranged to follow ``customer_ids`` (null where missing)."""
    at = pc.index_in(keys, value_set=customer_ids)
    found = np.asarray(pc.is_valid(at).to_numpy(zero_copy_only=False), bool)
    pos = np.asarray(pc.fill_null(at, 0).to_numpy(zero_copy_only=False), np.int64)
    index = np.full(len(customer_ids), -1, dtype=np.int64)
    index[pos[found]] = np.flatnonzero(found)
    return values.take(pa.array(index, mask=index < 0))


def _col_kind(kind: str) -> str:
    return {"number": "float", "bool": "bool"}.get(kind, "text")


def _to_float(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    text = pc.utf8_trim_whitespace(values)
    ok = pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())


def segment_history_values(
    conn: sa.Connection, customer_ids: pa.Array, kind: str, customer: np.ndarray, day: np.ndarray
) -> pa.Array | None:
    """The ``kind`` segment each decision's targeting saw (``day`` its run dates, see the module
    docstring), ``(m,)`` dictionary-encoded; None if there is no history of that kind at all.

    A history row covers ``valid_from <= day < valid_to`` (open-ended when ``valid_to`` is null).
    """
    day = targeting_days(conn, day)
    table = read_columns(
        conn,
        [
            Col("customer_id", "s.customer_id", "text"),
            Col("value", "s.value", "text"),
            Col("valid_from", "s.valid_from", "date"),
            Col("valid_to", "s.valid_to", "date"),
        ],
        from_sql="segment_history s",
        where="s.kind = :kind",
        params={"kind": kind},
        chunk_key="s.id",
    )
    if table.num_rows == 0:
        return None
    at = pc.index_in(table.column("customer_id"), value_set=customer_ids)
    found = np.asarray(pc.is_valid(at).to_numpy(zero_copy_only=False), bool)
    h_cust = np.asarray(pc.fill_null(at, 0).to_numpy(zero_copy_only=False), np.int64)[found]
    h_from = _days(table.column("valid_from"))[found]
    far = day_number(date.max)
    h_to = _days(table.column("valid_to").fill_null(date.max))[found]
    h_to = np.where(h_to >= far, np.iinfo(np.int64).max, h_to)
    encoded = table.column("value").combine_chunks().filter(pa.array(found)).dictionary_encode()
    h_code = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
    if len(h_cust) == 0:
        return pa.DictionaryArray.from_arrays(
            pa.nulls(len(customer), pa.int32()), pa.array([], pa.string())
        )
    lo = min(int(h_from.min()), int(day.min()))
    span = max(int(h_from.max()), int(day.max())) - lo + 2
    h_key = h_cust * span + (h_from - lo)
    order = np.argsort(h_key, kind="stable")
    h_key = h_key[order]
    d_key = customer * span + (day - lo)
    idx = np.searchsorted(h_key, d_key, side="right") - 1
    safe = np.maximum(idx, 0)
    row = order[safe]
    hit = (idx >= 0) & (h_cust[row] == customer) & (h_to[row] > day)
    codes = np.where(hit, h_code[row], -1).astype(np.int32)
    # Dictionary-encoded: m can be 10M decisions, the segments a handful of strings.
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), encoded.dictionary)


def targeting_days(conn: sa.Connection, day: np.ndarray) -> np.ndarray:
    """Map run dates (day numbers) to the date of the refresh each run decided with, the run's
    ``segments_as_of``; a date whose run did not record it (begun before it was kept, or
    decisions imported from elsewhere) keeps its own date, as reports read it before."""
    from sqlmodel import col

    from orchestrator.storage.models import Run

    rows = conn.execute(  # typed columns: dates on both backends
        sa.select(col(Run.run_date), col(Run.segments_as_of)).where(
            col(Run.segments_as_of).is_not(None)
        )
    ).all()
    out = np.asarray(day, np.int64)
    if not rows:
        return out
    pairs = [(day_number(run), day_number(seen)) for run, seen in rows if seen is not None]
    runs, seen = (np.array(v, np.int64) for v in zip(*pairs, strict=True))
    order = np.argsort(runs)
    runs, seen = runs[order], seen[order]
    at = np.clip(np.searchsorted(runs, out), 0, len(runs) - 1)
    return np.where(runs[at] == out, seen[at], out)


def label_values(values: pa.Array, kind: str) -> tuple[np.ndarray, list[str], bool]:
    """Codes and labels for values ``(k,)``: quintile ranges for numbers, frequent text values.

    Returns ``(codes (k,), labels, numeric)``; unknown values get the label ``unknown``.
    """
    if kind == "number":
        v = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        return (*_quantile_bins(v), True)
    encoded = values if pa.types.is_dictionary(values.type) else values.cast(pa.string())
    if not pa.types.is_dictionary(encoded.type):
        encoded = encoded.dictionary_encode()
    idx = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), np.int64)
    names = encoded.dictionary.to_pylist()
    counts = np.bincount(idx[idx >= 0], minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    keep = order[: MAX_LEVELS - 1] if len(names) > MAX_LEVELS else order
    kept = sorted(keep.tolist(), key=lambda i: str(names[i]))
    remap = np.full(len(names) + 1, -1, dtype=np.int64)
    labels = [str(names[i]) for i in kept]
    for new, old in enumerate(kept):
        remap[old] = new
    if len(kept) < len(names):
        remap[:-1][remap[:-1] < 0] = len(labels)
        labels.append(OTHER)
    remap[-1] = len(labels)
    labels.append(UNKNOWN)
    codes = remap[np.where(idx >= 0, idx, len(names))]
    return codes, labels, False


def _quantile_bins(v: np.ndarray) -> tuple[np.ndarray, list[str]]:
    known = np.isfinite(v)
    if not known.any():
        return np.zeros(len(v), dtype=np.int64), [UNKNOWN]
    cuts = np.unique(np.quantile(v[known], np.linspace(0, 1, N_QUANTILES + 1)[1:-1]))
    cuts = cuts[cuts > v[known].min()]  # so that no bin is empty by construction
    codes = np.searchsorted(cuts, v, side="right")
    labels = []
    for i in range(len(cuts) + 1):
        if i == 0:
            labels.append(f"< {_fmt(cuts[0])}" if len(cuts) else "all")
        elif i == len(cuts):
            labels.append(f"≥ {_fmt(cuts[-1])}")
        else:
            labels.append(f"{_fmt(cuts[i - 1])} – {_fmt(cuts[i])}")
    codes = np.where(known, codes, len(labels))
    labels.append(UNKNOWN)
    return codes.astype(np.int64), labels


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def segments(conn: sa.Connection, data: Outcomes, names: Sequence[str]) -> list[Segment]:
    """Resolve ``--by`` names into per-decision label codes."""
    check_fields(conn, names)
    fields = customer_columns(conn, data.customer_ids, [n for n in names if n not in SPECIAL])
    out = []
    for name in names:
        if name == "treatment":
            out.append(Segment(name, data.treatment, list(data.treatments), "treatment"))
            continue
        if name == "step":
            assert data.step is not None and data.steps is not None
            out.append(Segment(name, data.step, list(data.steps), "treatment"))
            continue
        if name in SEGMENT_KINDS:
            values = segment_history_values(conn, data.customer_ids, name, data.customer, data.day)
            if values is None:
                raise InputError(
                    f"--by {name}: no {name} segment history yet (run the segmentation refresh, "
                    f"or use --by {HISTORY_KINDS[name]} for today's segment)"
                )
            codes, labels, _ = label_values(values, "string")
            out.append(Segment(name, codes, labels, "segment"))
            continue
        values, kind = fields[name]
        cust_codes, labels, numeric = label_values(values, kind)
        where = "feature" if name in COMPUTED_FEATURES else "attribute"
        out.append(Segment(name, cust_codes[data.customer], labels, where, numeric))
    return out
