"""The daemon: real APScheduler job configuration, frozen clock, catch-up of missed days."""

from __future__ import annotations

import threading
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
    STEPS,
    Folders,
    daily_job,
    parse_time,
    pending_dates,
    schedule,
)
from orchestrator.errors import InputError
from orchestrator.run import RunStopped, run_daily
from tests.helpers import seed_customers

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"
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


UTC = ZoneInfo("UTC")


def _steps(engine: sa.Engine) -> list[tuple[str, date, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT job_id, run_date, status, attempts, started_at FROM job_run")
        ).all()
    order = sorted(rows, key=lambda r: (str(r[1]), r[4]))
    return [(r[0], date.fromisoformat(str(r[1])[:10]), r[2], r[3]) for r in order]


@pytest.fixture
def ready(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 150)
    return engine


def test_a_simulated_week_runs_each_step_once_a_day_in_order(
    ready: sa.Engine, tmp_path: Path
) -> None:
    folders = Folders(exports=tmp_path / "out", reports=tmp_path / "reports")
    first = date(2026, 11, 23)
    for offset in range(7):
        moment = datetime.combine(first + timedelta(days=offset), datetime.min.time(), UTC)
        with time_machine.travel(moment + timedelta(hours=6), tick=False):
            outcome = daily_job(ready, now=datetime.now, folders=folders, batch_size=40)
            again = daily_job(ready, now=datetime.now, folders=folders, batch_size=40)
        assert outcome.errors == [] and outcome.run_dates == [first + timedelta(days=offset)]
        assert again.steps == [] and again.run_dates == []  # nothing is done twice
    steps = _steps(ready)
    days = [first + timedelta(days=i) for i in range(7)]
    assert [(s[0], s[1]) for s in steps] == [(job, d) for d in days for job in STEPS]
    assert {s[3] for s in steps} == {1}
    by_status = {(s[0], s[2]) for s in steps}
    assert ("run", "done") in by_status and ("learn", "done") in by_status
    assert ("import", "skipped") in by_status  # no drop folder
    with ready.connect() as conn:
        runs = conn.execute(sa.text("SELECT run_date, status FROM run ORDER BY run_date")).all()
    assert [r[1] for r in runs] == ["done"] * 7
    exported = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    # a file per channel and day, empty or not, none left half-written
    assert exported == sorted(
        ["email", "sms"] + [f"{c}/{d}.csv" for c in ("email", "sms") for d in days]
    )


def test_a_failed_step_is_retried_from_where_it_failed(ready: sa.Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the export folder should be")
    folders = Folders(exports=blocker)
    now = lambda: datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # noqa: E731
    failed = daily_job(ready, now=now, folders=folders, batch_size=40)
    assert failed.run_dates == [date(2026, 11, 23)] and len(failed.errors) == 1
    assert failed.errors[0].startswith("export 2026-11-23:")
    assert [s.job_id for s in failed.steps] == ["import", "segments", "run", "export"]
    blocker.unlink()
    retried = daily_job(ready, now=now, folders=folders, batch_size=40)
    assert retried.errors == [] and [s.job_id for s in retried.steps] == [
        "export",
        "learn",
        "report",
    ]
    attempts = {s[0]: s[3] for s in _steps(ready)}
    assert attempts["run"] == 1 and attempts["export"] == 2
    assert (blocker / "email" / "2026-11-23.csv").exists()


def test_drop_folder_files_are_imported_or_set_aside_with_the_reason(
    ready: sa.Engine, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "events-1.csv").write_text(
        "event_id,customer_id,occurred_at,type,amount\ne1,C000001,2026-11-20T10:00:00,purchase,30\n"
    )
    (drop / "events-2.csv").write_text(
        "event_id,customer_id,occurred_at,type,amount\ne2,C000002,2026-11-20T10:00:00,purchase,abc\n"
    )
    (drop / "notes.txt").write_text("not data")
    now = lambda: datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # noqa: E731
    outcome = daily_job(ready, now=now, folders=Folders(drop=drop), batch_size=40)
    assert outcome.errors == []
    assert "1 rejected: events-2.csv" in outcome.steps[0].detail
    assert (drop / "imported" / "2026-11-23" / "events-1.csv").exists()
    reason = (drop / "rejected" / "events-2.csv.error.txt").read_text()
    assert "events-2.csv" in reason and "amount" in reason
    assert (drop / "notes.txt").exists()  # not ours: left where it is
    with ready.connect() as conn:
        ids = conn.execute(sa.text("SELECT source_event_id FROM event")).scalars().all()
    assert ids == ["e1"]  # nothing of the refused file


def test_the_day_waits_when_asked_to_stop_or_no_longer_the_leader(ready: sa.Engine) -> None:
    now = lambda: datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # noqa: E731
    stop = threading.Event()
    stop.set()
    assert daily_job(ready, now=now, stop=stop).stopped
    assert daily_job(ready, now=now, still_leader=lambda: False).stopped
    assert _steps(ready) == []


SAME_DECISIONS = (
    'SELECT customer_id, campaign_id, treatment_id, "group" FROM decision ORDER BY customer_id'
)


def test_a_stopped_run_resumes_with_the_same_decisions(ready: sa.Engine, db_url: str) -> None:
    """``stop`` set during the run: the batch in hand is committed, the run is left stopped,
    and resuming it decides the rest exactly as a run that never stopped."""
    day = date(2026, 11, 23)
    stop = threading.Event()
    batches: list[int] = []

    def progress(done: int, _total: int | None) -> None:
        batches.append(done)
        if len(batches) == 2:
            stop.set()

    with pytest.raises(RunStopped, match="stopped after 2 batches"):
        run_daily(ready, day=day, batch_size=20, progress=progress, stop=stop)
    with ready.connect() as conn:
        assert conn.execute(sa.text("SELECT status, owner FROM run")).one() == ("stopped", "")
        assert conn.execute(sa.text("SELECT COUNT(*) FROM decision")).scalar_one() == len(
            {r for r in conn.execute(sa.text("SELECT customer_id FROM decision")).scalars()}
        )
    resumed = run_daily(ready, day=day, batch_size=20)
    assert resumed.resumed_after_batches == 2
    with ready.connect() as conn:
        after = conn.execute(sa.text(SAME_DECISIONS)).all()
    clean = run_daily(ready, day=day, batch_size=20, force=True)
    with ready.connect() as conn:
        again = conn.execute(sa.text(SAME_DECISIONS)).all()
    assert after == again and clean.decided == resumed.decided


def test_runs_record_the_plan_revision_they_started_under(ready: sa.Engine) -> None:
    run_daily(ready, day=date(2026, 11, 23), batch_size=40)
    with ready.connect() as conn:
        rev = conn.execute(sa.text("SELECT MAX(id) FROM plan_revision")).scalar_one()
        assert conn.execute(sa.text("SELECT plan_revision_id FROM run")).scalar_one() == rev


def test_status_tells_the_leader_the_day_and_what_waits(ready: sa.Engine) -> None:
    from orchestrator.daemon.lease import LeaderLease
    from orchestrator.daemon.status import daemon_status

    moment = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    daily_job(ready, now=lambda: moment, batch_size=40)
    lease = LeaderLease(ready, ttl=30, holder="box:4242:ab", info={"at": "07:30"})
    with time_machine.travel(moment, tick=False):
        assert lease.try_acquire()
        status = daemon_status(ready)
    assert status["leader"]["host"] == "box" and status["leader"]["pid"] == 4242
    assert status["schedule"]["at"] == "07:30"
    assert status["schedule"]["next"].startswith("2026-11-23T07:30")
    assert status["today"] == "2026-11-23" and status["lag_days"] == 0
    assert [s["job"] for s in status["steps"]] == list(STEPS)
    assert status["runs"][0]["status"] == "done" and status["runs"][0]["decided"] > 0
    waiting = status["awaiting_rewards"]
    assert waiting["decisions"] == status["runs"][0]["decided"] and waiting["window_closed"] == 0
