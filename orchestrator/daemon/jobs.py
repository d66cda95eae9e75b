"""The daemon's day: six steps, each done once per date, in order.

=========  ==========================================================================
step       what it does
=========  ==========================================================================
import     customers*/events* files of the drop folder (``ORCH_DROP_FOLDER``), imported
           in name order (customers first) and moved to ``imported/<date>/``; a file that
           is refused goes to ``rejected/`` with its error beside it, nothing of it kept
segments   refreshes features and segments as of the day before
run        the daily run (resumes a run that stopped or whose owner died)
export     the day's send list, one file per channel (``ORCH_EXPORT_FOLDER/<channel>/``)
learn      matures the closed windows' rewards, trains, evaluates, maybe promotes
report     the HTML uplift report (``ORCH_REPORT_FOLDER``)
=========  ==========================================================================

A step without its folder is ``skipped``. Each step of each date is a ``job_run`` row: a step
``done`` (or ``skipped``) for a date is never done again, so a day that failed half-way is
retried from the step that failed, and two daemons (or a restart) never run a step twice.
The dates are every day since the last finished run, then today, in order (at most
``CATCH_UP_DAYS``; older missed days are logged as skipped). A step that fails stops the day
(the later steps need it) and the error is returned for the caller to retry.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import col, select

from orchestrator.errors import InputError
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import JobRun, Run, utcnow
from orchestrator.storage.plan_repo import plan_today, read_plan

log = logging.getLogger("orch.daemon")

JOB_ID = "daily"
STEPS = ("import", "segments", "run", "export", "learn", "report")
MISFIRE_GRACE_SECONDS = 6 * 3600
CATCH_UP_DAYS = 7
IMPORT_SUFFIXES = (".csv", ".parquet", ".jsonl")


@dataclass
class Folders:
    """Where the daemon reads and writes files (None: that step is skipped)."""

    drop: Path | None = None
    exports: Path | None = None
    reports: Path | None = None

    @classmethod
    def from_settings(cls) -> Folders:
        from orchestrator.config import get_settings

        s = get_settings()
        return cls(
            Path(s.drop_folder) if s.drop_folder else None,
            Path(s.export_folder) if s.export_folder else None,
            Path(s.report_folder) if s.report_folder else None,
        )


@dataclass
class StepResult:
    job_id: str
    run_date: date
    status: str  # done | skipped | failed | stopped | already
    seconds: float = 0.0
    detail: str = ""
    error: str | None = None
    decided: int = 0


@dataclass
class DayOutcome:
    run_dates: list[date] = field(default_factory=list)
    decided: int = 0
    learned: bool = False
    errors: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    stopped: bool = False  # asked to stop, or no longer the leader: the rest waits


def parse_time(value: str) -> tuple[int, int]:
    """``HH:MM`` → (hour, minute), with a one-line error."""
    try:
        hour, minute = (int(part) for part in value.split(":"))
    except ValueError:
        raise InputError(f"--at: {value!r} is not a time (use HH:MM)") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise InputError(f"--at: {value!r} is not a time of day")
    return hour, minute


def plan_timezone(engine: sa.Engine) -> ZoneInfo:
    with session_scope(engine) as session:
        return ZoneInfo(read_plan(session).settings.timezone)


def plan_run_at(engine: sa.Engine) -> str:
    with session_scope(engine) as session:
        return read_plan(session).settings.run_at


def pending_dates(
    engine: sa.Engine, today: date, *, catch_up_days: int = CATCH_UP_DAYS
) -> list[date]:
    """Dates whose day is not complete: every day after the last finished run (at most
    ``catch_up_days`` back, older ones are logged as skipped), and today unless all its steps
    are done. A finished run's date is complete when no step of it is left unfinished."""
    with session_scope(engine) as session:
        last = session.exec(
            select(col(Run.run_date))
            .where(col(Run.status) == "done")
            .order_by(col(Run.run_date).desc())
        ).first()
        open_steps = session.exec(
            select(col(JobRun.run_date)).where(col(JobRun.status).not_in(("done", "skipped")))
        ).all()
    start = today if last is None else last + timedelta(days=1)
    earliest = today - timedelta(days=catch_up_days)
    if start < earliest:
        log.warning(
            "%d missed days before %s are not caught up (%s to %s); run them with `orch run "
            "--date`, or let them go",
            (earliest - start).days,
            earliest,
            start,
            earliest - timedelta(days=1),
        )
        start = earliest
    days = {start + timedelta(days=i) for i in range((today - start).days + 1)}
    days |= {d for d in open_steps if earliest <= d <= today}
    return sorted(days)


# --- the steps ---------------------------------------------------------------------------------


@dataclass
class Day:
    """What the steps of one date share."""

    engine: sa.Engine
    day: date
    folders: Folders
    batch_size: int
    actor: str
    stop: threading.Event


def _step_import(d: Day) -> StepResult:
    drop = d.folders.drop
    if drop is None:
        return StepResult("import", d.day, "skipped", detail="no drop folder")
    from orchestrator.imports.customers import import_customers
    from orchestrator.imports.events import import_events

    drop.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in drop.iterdir() if p.is_file() and p.suffix in IMPORT_SUFFIXES)
    kinds = [("customers", import_customers), ("events", import_events)]
    done, rejected, rows = [], [], {"customers": 0, "events": 0}
    for kind, importer in kinds:
        for path in (p for p in files if p.name.startswith(kind)):
            try:
                report = importer(d.engine, path)
            except InputError as exc:
                # Refused whole (the import wrote nothing): kept aside with the reason.
                target = _move(path, drop / "rejected")
                target.with_name(target.name + ".error.txt").write_text(f"{exc}\n")
                log.error("import %s refused: %s (moved to %s)", path.name, exc, target)
                rejected.append(path.name)
                continue
            rows[kind] += report.inserted + report.updated
            _move(path, drop / "imported" / d.day.isoformat())
            done.append(path.name)
            log.info("imported %s: %s rows", path.name, f"{report.rows_read:,}")
    ignored = [p.name for p in files if not p.name.startswith(("customers", "events"))]
    if ignored:
        log.warning("drop folder: %s not imported (names start with customers or events)", ignored)
    detail = f"{len(done)} files ({rows['customers']:,} customers, {rows['events']:,} events)"
    if rejected:
        detail += f"; {len(rejected)} rejected: {', '.join(rejected)}"
    return StepResult("import", d.day, "done", detail=detail)


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():  # never overwrite an earlier file of the same name
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), target)
    return target


def _step_segments(d: Day) -> StepResult:
    try:
        from orchestrator.segments.refresh import refresh_segments
    except ImportError:  # segmentation not installed: features come from elsewhere
        return StepResult("segments", d.day, "skipped", detail="segmentation not installed")
    try:
        result = refresh_segments(d.engine, as_of=d.day - timedelta(days=1))
    except InputError as exc:  # e.g. no events yet: decide on the features there are
        log.warning("segments not refreshed for %s: %s", d.day, exc)
        return StepResult("segments", d.day, "skipped", detail=str(exc))
    return StepResult("segments", d.day, "done", detail=f"{result.customers:,} customers")


def _step_run(d: Day) -> StepResult:
    from orchestrator.run import run_daily

    report = run_daily(d.engine, day=d.day, batch_size=d.batch_size, stop=d.stop)
    detail = f"{report.decided:,} decisions" if report.status == "done" else report.status
    if report.resumed_after_batches:
        detail += f" (resumed after {report.resumed_after_batches} batches)"
    return StepResult("run", d.day, "done", detail=detail, decided=report.decided)


def _step_export(d: Day) -> StepResult:
    folder = d.folders.exports
    if folder is None:
        return StepResult("export", d.day, "skipped", detail="no export folder")
    from orchestrator.export import export_send_list

    # One file per channel of the plan every day, empty or not: a sender that finds the
    # day's file knows the day is decided.
    with session_scope(d.engine) as session:
        channels = sorted({c.channel for c in read_plan(session, include_archived=False).campaigns})
    rows = 0
    for channel in channels:
        target = folder / channel / f"{d.day.isoformat()}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        rows += export_send_list(d.engine, day=d.day, out=partial, fmt="csv", channel=channel)
        partial.replace(target)  # a sender polling the folder never sees half a file
    return StepResult("export", d.day, "done", detail=f"{rows:,} sends in {len(channels)} files")


def _step_learn(d: Day) -> StepResult:
    from orchestrator.learning.learn import learn

    report = learn(d.engine, as_of=d.day, actor=d.actor)
    detail = f"{report.maturation.matured:,} rewards matured; {report.decision or 'no change'}"
    return StepResult("learn", d.day, "done", detail=detail)


def _step_report(d: Day) -> StepResult:
    folder = d.folders.reports
    if folder is None:
        return StepResult("report", d.day, "skipped", detail="no report folder")
    from orchestrator.reports.html import uplift_html
    from orchestrator.reports.page import page_parts
    from orchestrator.reports.uplift import uplift_report

    try:
        report = uplift_report(d.engine, as_of=d.day, detail=True)
    except InputError as exc:  # nothing to measure yet
        return StepResult("report", d.day, "skipped", detail=str(exc))
    parts = page_parts(d.engine, report)
    page = uplift_html(
        report,
        programme=parts.programme,
        personas=parts.personas,
        programme_note=parts.programme_note,
        customers=parts.customers,
    )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"uplift-{d.day.isoformat()}.html"
    partial = target.with_name(target.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return StepResult("report", d.day, "done", detail=str(target))


STEP_FUNCTIONS: dict[str, Callable[[Day], StepResult]] = {
    "import": _step_import,
    "segments": _step_segments,
    "run": _step_run,
    "export": _step_export,
    "learn": _step_learn,
    "report": _step_report,
}


# --- one day of steps, recorded ------------------------------------------------------------


def _begin(engine: sa.Engine, job_id: str, day: date, holder: str) -> bool:
    """Mark the step running for ``day``; False when it is done (or skipped) already."""
    with session_scope(engine) as session:
        row = session.get(JobRun, (job_id, day))
        if row is not None and row.status in ("done", "skipped"):
            return False
        if row is None:
            row = JobRun(job_id=job_id, run_date=day)
        row.status, row.holder, row.attempts = "running", holder, row.attempts + 1
        row.started_at, row.finished_at, row.error = utcnow(), None, None
        session.add(row)
    return True


def _end(engine: sa.Engine, result: StepResult) -> None:
    with session_scope(engine) as session:
        row = session.get(JobRun, (result.job_id, result.run_date))
        if row is None:  # pragma: no cover - _begin wrote it
            return
        row.status, row.finished_at, row.seconds = result.status, utcnow(), result.seconds
        row.detail, row.error = result.detail[:2000] or None, result.error
        session.add(row)


def daily_job(
    engine: sa.Engine,
    *,
    now: Callable[[], datetime],
    actor: str = "daemon",
    batch_size: int = 50_000,
    folders: Folders | None = None,
    stop: threading.Event | None = None,
    still_leader: Callable[[], bool] = lambda: True,
    holder: str = "",
    observe: Callable[[StepResult], None] | None = None,
) -> DayOutcome:
    """Every pending date's steps, in order; errors are logged and returned, not raised.

    Before each step it checks ``stop`` and ``still_leader``: when either says no, it leaves
    the rest for later (``outcome.stopped``). ``observe`` sees each step's result (metrics)."""
    from orchestrator.run import RunStopped

    folders = folders or Folders()
    stop = stop or threading.Event()
    outcome = DayOutcome()
    with session_scope(engine) as session:
        today = plan_today(session, now())
    for day in pending_dates(engine, today):
        ctx = Day(engine, day, folders, batch_size, actor, stop)
        for job_id in STEPS:
            if stop.is_set() or not still_leader():
                outcome.stopped = True
                log.info("leaving %s %s and what follows for later", job_id, day)
                return outcome
            if not _begin(engine, job_id, day, holder):
                continue
            started = time.perf_counter()
            try:
                result = STEP_FUNCTIONS[job_id](ctx)
            except RunStopped as exc:
                result = StepResult(job_id, day, "stopped", error=str(exc))
            except Exception as exc:  # the day stops here; the caller retries it
                log.exception("%s %s failed", job_id, day)
                first = str(exc).splitlines()[0] if str(exc) else ""
                result = StepResult(job_id, day, "failed", error=f"{type(exc).__name__}: {first}")
            result.seconds = time.perf_counter() - started
            _end(engine, result)
            outcome.steps.append(result)
            if observe is not None:
                observe(result)
            if result.status == "stopped":
                outcome.stopped = True
                log.info("%s %s stopped: %s", job_id, day, result.error)
                return outcome
            if result.status == "failed":
                outcome.errors.append(f"{job_id} {day}: {result.error}")
                return outcome
            log.info(
                "%s %s %s in %.1f s: %s", job_id, day, result.status, result.seconds, result.detail
            )
            if job_id == "run":
                outcome.run_dates.append(day)
                outcome.decided += result.decided
            if job_id == "learn":
                outcome.learned = True
    return outcome


def schedule(
    scheduler: BaseScheduler,
    engine: sa.Engine,
    *,
    hour: int,
    minute: int,
    timezone: ZoneInfo,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    func: Callable[[], object] | None = None,
) -> None:
    """Register the daily job on ``scheduler`` (explicit id, coalesced, one at a time): ``func``
    if given (the daemon's wrapper: leader check, retries, metrics), else ``daily_job``."""
    kwargs = {} if func is not None else {"engine": engine, "now": now}
    scheduler.add_job(
        func or daily_job,
        trigger=CronTrigger(hour=hour, minute=minute, timezone=timezone),
        kwargs=kwargs,
        id=JOB_ID,
        name="the day: import, segments, run, export, learn, report",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        replace_existing=True,
    )
