"""The daemon: real APScheduler job configuration, frozen clock, catch-up of missed days."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator import admin
from orchestrator.daemon import (
    JOB_ID,
    MISFIRE_GRACE_SECONDS,
    daily_job,
    parse_time,
    pending_dates,
    schedule,
)
from orchestrator.errors import InputError
from orchestrator.run import run_daily
from tests.helpers import seed_customers

PLAN = Path(__file__).parent / "data" / "plan_run.yaml"
MADRID = ZoneInfo("Europe/Madrid")


def test_job_is_registered_once_coalesced_with_a_grace_time(engine: sa.Engine) -> None:
    scheduler = BackgroundScheduler(timezone=MADRID)
    scheduler.start(paused=True)  # a started scheduler: jobs go to its real job store
    try:
        schedule(scheduler, engine, hour=6, minute=30, timezone=MADRID)
        schedule(scheduler, engine, hour=6, minute=30, timezone=MADRID)  # replaces it
        [job] = scheduler.get_jobs()
    finally:
        scheduler.shutdown(wait=False)
    assert job.id == JOB_ID and job.coalesce and job.max_instances == 1
    assert job.misfire_grace_time == MISFIRE_GRACE_SECONDS
    with time_machine.travel(datetime(2026, 3, 28, 23, 0, tzinfo=MADRID), tick=False):
        first = job.trigger.get_next_fire_time(None, datetime.now(MADRID))
        # the next one crosses the spring clock change and still fires at 06:30 local time
        second = job.trigger.get_next_fire_time(first, first)
    assert (first.hour, first.minute, first.date()) == (6, 30, date(2026, 3, 29))
    assert (second.hour, second.minute, second.utcoffset()) == (6, 30, timedelta(hours=2))


def test_parse_time() -> None:
    assert parse_time("06:05") == (6, 5)
    for bad in ("6", "25:00", "aa:bb"):
        with pytest.raises(InputError, match="--at"):
            parse_time(bad)


def test_daily_job_catches_up_missed_days_then_learns(engine: sa.Engine) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 120)
    run_daily(engine, day=date(2026, 11, 20), batch_size=60)
    assert pending_dates(engine, date(2026, 11, 23)) == [
        date(2026, 11, 21),
        date(2026, 11, 22),
        date(2026, 11, 23),
    ]
    with time_machine.travel(datetime(2026, 11, 23, 6, 0, tzinfo=ZoneInfo("UTC")), tick=False):
        outcome = daily_job(engine, now=datetime.now)
    assert outcome.errors == [] and outcome.learned
    assert outcome.run_dates == [date(2026, 11, 21), date(2026, 11, 22), date(2026, 11, 23)]
    assert pending_dates(engine, date(2026, 11, 23)) == []
    again = daily_job(engine, now=lambda: datetime(2026, 11, 23, 7, 0, tzinfo=ZoneInfo("UTC")))
    assert again.run_dates == [] and again.errors == []
