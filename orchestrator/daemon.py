"""`orch daemon`: the daily job on a schedule (APScheduler 3), for a long-lived process.

One job, ``daily``, fires every day at the configured time in the plan's time zone: it refreshes
segments (when the segmentation module is installed), runs the day, then learns from the windows
that have closed. ``coalesce`` and ``max_instances=1`` make a late or slow day run once, never
twice at the same time; a misfire within ``misfire_grace_time`` still runs (a daemon restarted
at 06:30 still runs the 06:00 job), a later one waits for the next day, where the run for the
missed date is caught up first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import col, select

from orchestrator.errors import InputError
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import Run
from orchestrator.storage.plan_repo import read_plan

log = logging.getLogger("orch.daemon")

JOB_ID = "daily"
MISFIRE_GRACE_SECONDS = 6 * 3600


@dataclass
class DayOutcome:
    run_dates: list[date] = field(default_factory=list)
    decided: int = 0
    learned: bool = False
    errors: list[str] = field(default_factory=list)


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


def pending_dates(engine: sa.Engine, today: date, *, catch_up_days: int = 7) -> list[date]:
    """Dates to run: any missed day since the last finished run (at most a week), then today."""
    with session_scope(engine) as session:
        last = session.exec(
            select(col(Run.run_date))
            .where(col(Run.status) == "done")
            .order_by(col(Run.run_date).desc())
        ).first()
    start = (
        today
        if last is None
        else max(last + timedelta(days=1), today - timedelta(days=catch_up_days))
    )
    return [start + timedelta(days=i) for i in range((today - start).days + 1)]


def daily_job(
    engine: sa.Engine,
    *,
    now: Callable[[], datetime],
    actor: str = "daemon",
    batch_size: int = 50_000,
) -> DayOutcome:
    """Refresh segments, run every pending date, learn. Errors are logged, not raised."""
    from orchestrator.learning.learn import learn
    from orchestrator.run import run_daily

    outcome = DayOutcome()
    today = now().astimezone(plan_timezone(engine)).date()
    try:
        from orchestrator.segments.refresh import refresh_segments
    except ImportError:  # segmentation not installed: features come from elsewhere
        refresh_segments = None  # type: ignore[assignment]
    for day in pending_dates(engine, today):
        try:
            if refresh_segments is not None:
                try:
                    refresh_segments(engine, as_of=day - timedelta(days=1))
                except InputError as exc:  # e.g. no events yet: decide on the features we have
                    log.warning("segments not refreshed for %s: %s", day, exc)
            report = run_daily(engine, day=day, batch_size=batch_size)
            outcome.run_dates.append(day)
            outcome.decided += report.decided
            log.info("run %s: %s decisions", day, report.decided)
        except Exception as exc:  # keep the daemon alive; the next day retries
            log.exception("run %s failed", day)
            outcome.errors.append(f"run {day}: {exc}")
            return outcome
    try:
        learn(engine, as_of=today, actor=actor)
        outcome.learned = True
    except Exception as exc:
        log.exception("learning failed")
        outcome.errors.append(f"learn: {exc}")
    return outcome


def schedule(
    scheduler: BaseScheduler,
    engine: sa.Engine,
    *,
    hour: int,
    minute: int,
    timezone: ZoneInfo,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> None:
    """Register the daily job on ``scheduler`` (explicit id, coalesced, one at a time)."""
    scheduler.add_job(
        daily_job,
        trigger=CronTrigger(hour=hour, minute=minute, timezone=timezone),
        kwargs={"engine": engine, "now": now},
        id=JOB_ID,
        name="decide, then learn",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        replace_existing=True,
    )
