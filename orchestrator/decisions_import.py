"""`orch decisions import`: past test/control logs, so old A/B tests get the same reports.

A file (CSV, Parquet or JSON lines, read and checked as the other imports are) has one decision
per line: ``customer_id``, ``campaign_id``, ``treatment_id``, ``group`` (test | control),
``decision_date``, and optionally ``propensity``, ``window_end``, ``measurement_days`` and
``channel``. Rules:

- **Campaigns must be in the plan** (archived ones count), with the treatment named, so a typo
  cannot create a phantom campaign. ``new_campaigns=True`` accepts campaigns and treatments the
  plan never had: they are measured like the others, with no treatment cost (the plan holds
  costs), and need a window (``window_end``, ``measurement_days`` or a default).
- The window ends at ``window_end`` (exclusive), else ``decision_date + measurement_days``, else
  after the campaign's ``measurement_days`` in the plan.
- ``split_share`` is the file's own share of the line's group in its campaign, P(group |
  campaign), and ``propensity`` defaults to P(treatment | campaign) × P(group | campaign): what
  the split and the choice were, as far as the log shows.
- One decision per customer and date, as in the decision log: a line repeating a decision
  already imported (same campaign, treatment and group) is skipped, so importing a file twice
  adds nothing; a line that contradicts one (in the file or the database) is an error.
- Imported decisions have ``reason`` and ``policy_name`` ``import``. Their outcomes come from the
  events of their windows (import those too) when a report matures them.

A bad line stops the import with one message naming file, line and field, and nothing is
written; with ``skip_invalid`` the bad lines go to a reject file and the rest is imported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import ImportFileError, InputError
from orchestrator.imports.common import (
    column,
    progress_of,
    require_columns,
    text_field,
    write_rejects,
)
from orchestrator.imports.convert import Converted, to_date, to_number
from orchestrator.imports.problems import Problems
from orchestrator.imports.report import ImportReport, Progress
from orchestrator.imports.source import Source, read_source
from orchestrator.reports.columnar import Col, read_columns
from orchestrator.storage import bulk, contact_state
from orchestrator.storage.db import require_schema

REQUIRED = ("customer_id", "campaign_id", "treatment_id", "group", "decision_date")
OPTIONAL = ("propensity", "window_end", "measurement_days", "channel")
REASON = "import"
GROUPS = ("test", "control")


@dataclass
class DecisionImportReport(ImportReport):
    """Counts of one decisions import, and the campaigns it brought that the plan lacks."""

    new_campaigns: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    channel: dict[str, str]
    measurement_days: dict[str, int]
    treatments: set[tuple[str, str]]


def import_decisions(
    engine: sa.Engine,
    path: str | Path,
    *,
    today: date,
    fmt: str | None = None,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    new_campaigns: bool = False,
    measurement_days: int | None = None,
    progress: Progress | None = None,
) -> DecisionImportReport:
    """Insert the decisions of a file in one transaction (see the module docstring)."""
    started = time.perf_counter()
    if measurement_days is not None and not 1 <= measurement_days <= 365:
        raise InputError("--measurement-days must be between 1 and 365")
    require_schema(engine)
    source = read_source(path, fmt)
    require_columns(source, REQUIRED)
    unknown = [c for c in source.table.column_names if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise ImportFileError(
            f"{source.label}: unknown column {unknown[0]!r} (columns: "
            f"{', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})"
        )
    with engine.begin() as conn:
        bulk.begin_write(conn)
        bulk.advisory_lock(conn, "orch.import.decisions")
        plan = _read_plan(conn)
        rows, problems, skip = _prepare(
            conn,
            source,
            plan,
            today=today,
            new_campaigns=new_campaigns,
            default_days=measurement_days,
        )
        if not skip_invalid:
            problems.raise_first()
        keep = ~problems.bad() & ~skip
        rows = rows.filter(pa.array(keep))
        rows = _with_propensity(rows)
        inserted = bulk.insert_arrow(
            conn, "decision", rows, progress=progress_of(progress, rows.num_rows)
        )
        if inserted:
            contact_state.invalidate(conn)  # the next run rebuilds states with these decisions
    rejected, written = write_rejects(
        source, problems, skip_invalid=skip_invalid, rejects_path=rejects_path
    )
    campaigns = set(rows.column("campaign_id").to_pylist())
    return DecisionImportReport(
        path=str(path),
        rows_read=source.rows_read,
        inserted=inserted,
        updated=0,
        unchanged_or_duplicate=int((~problems.bad() & skip).sum()),
        rejected=rejected,
        rejects_path=written,
        seconds=time.perf_counter() - started,
        new_campaigns=sorted(c for c in campaigns if c not in plan.channel),
    )


def _read_plan(conn: sa.Connection) -> _Plan:
    camps = conn.execute(sa.text("SELECT id, channel, measurement_days FROM campaign")).all()
    treatments = conn.execute(sa.text("SELECT campaign_id, id FROM treatment")).all()
    return _Plan(
        channel={c[0]: c[1] for c in camps},
        measurement_days={c[0]: int(c[2]) for c in camps},
        treatments={(t[0], t[1]) for t in treatments},
    )


def _date(source: Source, problems: Problems, name: str, *, required: bool) -> Converted:
    converted = to_date(column(source, name))
    if required:
        problems.add(name, converted.empty, lambda row: "is empty")
    problems.add_converted(name, converted)
    return converted


def _np(arr: pa.Array | pa.ChunkedArray, fill: object) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, fill).to_numpy(zero_copy_only=False))


def _prepare(
    conn: sa.Connection,
    source: Source,
    plan: _Plan,
    *,
    today: date,
    new_campaigns: bool,
    default_days: int | None,
) -> tuple[pa.Table, Problems, np.ndarray]:
    """Convert and check every column; return the decision rows (n,), problems and the rows
    that repeat a decision already known (skipped, not errors)."""
    table = source.table
    n = table.num_rows
    names = table.column_names
    problems = Problems(source)
    customer = text_field(source, problems, "customer_id", max_length=128, required=True)
    campaign = text_field(source, problems, "campaign_id", max_length=64, required=True)
    treatment = text_field(source, problems, "treatment_id", max_length=64, required=True)
    group = text_field(source, problems, "group", max_length=16, required=True)
    group_values = pc.utf8_lower(group.values)
    bad_group = ~group.empty & ~_np(pc.is_in(group_values, pa.array(GROUPS)), False)
    problems.add(
        "group",
        bad_group,
        lambda row: f"{group.original[row].as_py()!r} is not test or control",
    )
    day = _date(source, problems, "decision_date", required=True)
    day_num = _np(pc.cast(day.values, pa.int32()), 0).astype(np.int64)
    today_num = (today - date(1970, 1, 1)).days
    problems.add(
        "decision_date",
        ~day.empty & ~day.bad & (day_num > today_num),
        lambda row: f"{day.original[row].as_py()!r} is after today ({today})",
    )
    camp_ids = _np(campaign.values, "").astype(object)
    treat_ids = _np(treatment.values, "").astype(object)
    known = np.fromiter((c in plan.channel for c in camp_ids), bool, n)
    if not new_campaigns:
        problems.add(
            "campaign_id",
            ~campaign.empty & ~known,
            lambda row: (
                f"{camp_ids[row]!r} is not a campaign of the plan (check the id, or import "
                "with --new-campaigns for a campaign the plan never had)"
            ),
        )
        has_treatment = np.fromiter(
            ((c, t) in plan.treatments for c, t in zip(camp_ids, treat_ids, strict=True)),
            bool,
            n,
        )
        problems.add(
            "treatment_id",
            known & ~treatment.empty & ~has_treatment,
            lambda row: f"campaign {camp_ids[row]!r} has no treatment {treat_ids[row]!r}",
        )

    propensity = pa.nulls(n, pa.float64())
    if "propensity" in names:
        prop = to_number(column(source, "propensity"))
        problems.add_converted("propensity", prop)
        propensity = pc.cast(prop.values, pa.float64())
        p = _np(propensity, 0.5).astype(np.float64)
        problems.add(
            "propensity",
            ~prop.empty & ~prop.bad & ((p <= 0) | (p > 1)),
            lambda row: f"{prop.original[row].as_py()!r} is not in (0, 1]",
        )

    end_num = np.full(n, -1, dtype=np.int64)
    if "measurement_days" in names:
        days = to_number(column(source, "measurement_days"))
        problems.add_converted("measurement_days", days)
        d = _np(pc.cast(days.values, pa.float64()), 0.0).astype(np.float64)
        ok_days = ~days.empty & ~days.bad
        problems.add(
            "measurement_days",
            ok_days & ((d != np.floor(d)) | (d < 1) | (d > 365)),
            lambda row: f"{days.original[row].as_py()!r} is not a whole number of days 1-365",
        )
        end_num = np.where(ok_days, day_num + d.astype(np.int64), end_num)
    if "window_end" in names:
        end = _date(source, problems, "window_end", required=False)
        given = ~end.empty & ~end.bad
        e = _np(pc.cast(end.values, pa.int32()), 0).astype(np.int64)
        problems.add(
            "window_end",
            given & (e <= day_num),
            lambda row: f"{end.original[row].as_py()!r} is not after decision_date",
        )
        problems.add(
            "measurement_days",
            given & (end_num >= 0) & (end_num != e),
            lambda row: "disagrees with window_end",
        )
        end_num = np.where(given, e, end_num)
    plan_days = np.fromiter((plan.measurement_days.get(c, -1) for c in camp_ids), np.int64, n)
    end_num = np.where((end_num < 0) & (plan_days > 0), day_num + plan_days, end_num)
    if default_days is not None:
        end_num = np.where(end_num < 0, day_num + default_days, end_num)
    problems.add(
        "window_end",
        (end_num < 0) & ~campaign.empty,
        lambda row: (
            f"is needed for campaign {camp_ids[row]!r}, which is not in the plan (give "
            "window_end or measurement_days, or --measurement-days)"
        ),
    )

    channel = pa.array([plan.channel.get(c) for c in camp_ids], pa.string())
    if "channel" in names:
        given_channel = text_field(source, problems, "channel", max_length=32, required=False)
        channel = pc.coalesce(given_channel.values, channel)

    rows = pa.table(
        {
            "run_date": day.values,
            "customer_id": customer.values,
            "campaign_id": campaign.values,
            "treatment_id": treatment.values,
            "channel": channel,
            "group": group_values,
            "propensity": propensity,
            "split_share": pa.nulls(n, pa.float64()),
            "reason": pa.array([REASON] * n, pa.string()),
            "policy_name": pa.array([REASON] * n, pa.string()),
            "policy_version_id": pa.nulls(n, pa.int64()),
            "window_end": pa.array(
                np.where(end_num >= 0, end_num, 0).astype(np.int32), pa.int32()
            ).cast(pa.date32()),
            "batch": pa.array(np.zeros(n, dtype=np.int64)),
        }
    )
    skip = _conflicts(conn, source, problems, rows, day_num)
    return rows, problems, skip


def _conflicts(
    conn: sa.Connection, source: Source, problems: Problems, rows: pa.Table, day_num: np.ndarray
) -> np.ndarray:
    """Flag lines contradicting another decision for the same customer and date (in the
    database, then earlier in the file); return the lines that repeat one exactly (to skip)."""
    n = rows.num_rows
    fine = ~problems.bad()
    skip = np.zeros(n, dtype=bool)
    if not fine.any():
        return skip
    sep = "\x1f"
    key = pc.binary_join_element_wise(
        pc.cast(rows.column("run_date"), pa.string()), rows.column("customer_id"), sep
    )
    what = pc.binary_join_element_wise(
        rows.column("campaign_id"), rows.column("treatment_id"), rows.column("group"), sep
    )
    whats = _np(what, "").astype(object)
    customer, run_date = rows.column("customer_id"), rows.column("run_date")

    lo, hi = int(day_num[fine].min()), int(day_num[fine].max())
    existing = read_columns(
        conn,
        [
            Col("run_date", "d.run_date", "date"),
            Col("customer_id", "d.customer_id", "text"),
            Col("campaign_id", "d.campaign_id", "text"),
            Col("treatment_id", "d.treatment_id", "text"),
            Col("grp", 'd."group"', "text"),
        ],
        from_sql="decision d",
        where="d.run_date >= :lo AND d.run_date <= :hi",
        params={"lo": date.fromordinal(lo + 719163), "hi": date.fromordinal(hi + 719163)},
        chunk_key="d.id",
    )
    if existing.num_rows:
        e_key = pc.binary_join_element_wise(
            pc.cast(existing.column("run_date"), pa.string()), existing.column("customer_id"), sep
        )
        e_what = pc.binary_join_element_wise(
            pc.fill_null(existing.column("campaign_id"), "(send nothing)"),
            pc.fill_null(existing.column("treatment_id"), ""),
            existing.column("grp"),
            sep,
        )
        at = pc.index_in(key, value_set=e_key.combine_chunks())
        found = _np(pc.is_valid(at), False).astype(bool) & fine
        pos = _np(at, 0).astype(np.int64)
        e_whats = _np(e_what, "").astype(object)
        same = np.zeros(n, dtype=bool)
        same[found] = e_whats[pos[found]] == whats[found]
        skip |= found & same
        problems.add(
            "customer_id",
            found & ~same,
            lambda row: (
                f"{customer[row].as_py()!r} already has a different decision on "
                f"{run_date[row].as_py()} in the database (campaign "
                f"{str(e_whats[pos[row]]).split(sep)[0]!r})"
            ),
        )
        fine &= ~found

    keys = _np(key, "").astype(object)
    lines = source.lines()
    first: dict[str, int] = {}
    clash = np.zeros(n, dtype=bool)
    clash_with: dict[int, int] = {}
    for i in np.flatnonzero(fine).tolist():
        j = first.setdefault(keys[i], i)
        if j != i:
            if whats[j] == whats[i]:
                skip[i] = True
            else:
                clash[i] = True
                clash_with[i] = j
    problems.add(
        "customer_id",
        clash,
        lambda row: (
            f"{customer[row].as_py()!r} already has a decision on {run_date[row].as_py()} "
            f"at {source.unit} {int(lines[clash_with[row]])}"
        ),
    )
    return skip


def _with_propensity(rows: pa.Table) -> pa.Table:
    """Set ``split_share`` to the file's P(group | campaign), and fill missing propensities with
    P(treatment | campaign) × P(group | campaign)."""
    if rows.num_rows == 0:
        return rows

    def codes(*names: str) -> np.ndarray:
        joined = pc.binary_join_element_wise(*(rows.column(n) for n in names), "\x1f")
        return _np(joined.combine_chunks().dictionary_encode().indices, 0).astype(np.int64)

    camp, pair, grp = (
        codes("campaign_id"),
        codes("campaign_id", "treatment_id"),
        codes("campaign_id", "group"),
    )
    per_camp = np.bincount(camp)[camp].astype(np.float64)
    split = np.bincount(grp)[grp] / per_camp
    share = np.bincount(pair)[pair] / per_camp * split
    prop = pc.coalesce(rows.column("propensity"), pa.array(share, pa.float64()))
    rows = rows.set_column(rows.column_names.index("propensity"), "propensity", prop)
    return rows.set_column(
        rows.column_names.index("split_share"), "split_share", pa.array(split, pa.float64())
    )
