"""`orch daemon`: run the daily job on a schedule in the foreground."""

from __future__ import annotations

import typer

from orchestrator.cli.common import console, get_engine


def daemon(
    at: str = typer.Option("06:00", "--at", help="Daily time HH:MM in the plan's time zone."),
    once: bool = typer.Option(False, "--once", help="Run the daily job now, once, and exit."),
) -> None:
    """Decide every day at --at (catching up missed days), then learn. Stop with Ctrl-C."""
    import logging
    from datetime import datetime

    from apscheduler.schedulers.blocking import BlockingScheduler

    from orchestrator.daemon import JOB_ID, daily_job, parse_time, plan_timezone, schedule

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    hour, minute = parse_time(at)
    engine = get_engine()
    tz = plan_timezone(engine)
    if once:
        outcome = daily_job(engine, now=lambda: datetime.now(tz))
        console.print(
            f"ran {', '.join(map(str, outcome.run_dates)) or 'nothing'}: "
            f"{outcome.decided:,} decisions; learned: {outcome.learned}"
        )
        if outcome.errors:
            raise typer.Exit(1)
        return
    scheduler = BlockingScheduler(timezone=tz)
    schedule(scheduler, engine, hour=hour, minute=minute, timezone=tz)
    trigger = scheduler.get_job(JOB_ID).trigger
    nxt = trigger.get_next_fire_time(None, datetime.now(tz))
    console.print(f"orch daemon: job {JOB_ID!r} at {at} {tz.key}; next run {nxt:%Y-%m-%d %H:%M %Z}")
    scheduler.start()  # blocks until Ctrl-C
