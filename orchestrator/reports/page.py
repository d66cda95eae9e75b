"""What the uplift page shows beside the uplift rows: the programme against the global control,
the sub-personas of the biggest campaign and the customers' future value by discount band.
Shared by `orch report uplift --format html|png`, `orch demo` and the daemon's daily report."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.reports.future_value import FutureValueReport, future_value_report
from orchestrator.reports.personas import PersonaReport, persona_report
from orchestrator.reports.programme import ProgrammeReport, programme_uplift
from orchestrator.reports.uplift import UpliftReport

Status = Callable[[str], AbstractContextManager[object]]


@dataclass
class PageParts:
    programme: ProgrammeReport | None
    programme_note: str | None
    personas: PersonaReport | None
    customers: FutureValueReport | None = None


def _quiet(_message: str) -> AbstractContextManager[object]:
    return nullcontext()


def biggest_campaign(report: UpliftReport) -> str | None:
    rows = [r for r in report.campaign_rows if r.status == "ok"]
    if not rows:
        return None
    return max(rows, key=lambda r: r.n_test + r.n_control).campaign


def default_min_leaf(report: UpliftReport, campaign: str) -> int:
    """A leaf size that lets a small campaign split: 100, or 5% of its control customers."""
    rows = [r for r in report.campaign_rows if r.campaign == campaign]
    control = sum(r.n_control for r in rows)
    return max(30, min(100, control // 20))


def page_parts(engine: sa.Engine, report: UpliftReport, status: Status = _quiet) -> PageParts:
    """The programme (when the report covers every campaign) and the sub-personas of the
    report's campaign or its biggest one; each left out, with a note, when it cannot be had."""
    programme, note = None, None
    if report.campaign is None:
        try:
            with status("measuring the programme"):
                programme = programme_uplift(
                    engine, as_of=report.as_of, since=report.since, until=report.until
                )
        except InputError as exc:
            note = str(exc)
    personas = None
    target = report.campaign or biggest_campaign(report)
    if target is not None:
        try:
            with status(f"finding the sub-personas of {target}"):
                personas = persona_report(
                    engine,
                    campaign=target,
                    treatment=report.treatment,
                    as_of=report.as_of,
                    since=report.since,
                    until=report.until,
                    min_leaf=default_min_leaf(report, target),
                )
        except InputError:
            personas = None
    customers = None
    try:
        with status("predicted future value by layer"):
            from sqlmodel import Session

            from orchestrator.storage.plan_repo import read_plan

            with Session(engine) as session:
                bands = read_plan(session).settings.bands
            customers = future_value_report(engine, by=["discount_band"], bands=bands)
    except InputError:  # no segmentation refresh or no value model yet: no section
        customers = None
    return PageParts(programme, note, personas, customers)
