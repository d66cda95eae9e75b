"""What `orch status` shows: the leader, the last runs and steps, the next day, the active
policy, the decisions still waiting for their rewards, and how far behind the runs are."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import col, select

from orchestrator.daemon.jobs import STEPS, parse_time
from orchestrator.daemon.lease import read_lease
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import JobRun, PolicyVersion, Run, utcnow
from orchestrator.storage.plan_repo import plan_today, read_plan


def _age(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def daemon_status(
    engine: sa.Engine, *, now: datetime | None = None, runs: int = 5
) -> dict[str, Any]:
    """Everything as JSON-ready data (times UTC ISO, ages in seconds)."""
    now = now or utcnow()
    with session_scope(engine) as session:
        plan = read_plan(session)
        today = plan_today(session, now)
        lease = read_lease(session.connection())
        last_runs = list(session.exec(select(Run).order_by(col(Run.run_date).desc()).limit(runs)))
        steps = list(
            session.exec(select(JobRun).order_by(col(JobRun.run_date).desc(), col(JobRun.job_id)))
        )
        active = session.exec(
            select(PolicyVersion)
            .where(col(PolicyVersion.status) == "active")
            .order_by(col(PolicyVersion.id).desc())
        ).first()
        waiting, overdue = (
            session.connection()
            .execute(
                sa.text(
                    "SELECT COUNT(*),"
                    " COALESCE(SUM(CASE WHEN d.window_end < :today THEN 1 ELSE 0 END), 0)"
                    " FROM decision d LEFT JOIN reward r ON r.decision_id = d.id"
                    " WHERE r.decision_id IS NULL"
                ),
                {"today": today.isoformat()},
            )
            .one()
        )
    last_done = next((r.run_date for r in last_runs if r.status == "done"), None)
    at = (lease.info.get("at") if lease else None) or plan.settings.run_at
    hour, minute = parse_time(at)
    tz = ZoneInfo(plan.settings.timezone)
    trigger = CronTrigger(hour=hour, minute=minute, timezone=tz)
    local_now = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(tz)
    next_day = trigger.get_next_fire_time(None, local_now)
    latest: dict[str, JobRun] = {}
    for s in steps:
        latest.setdefault(s.job_id, s)
    return {
        "as_of": now.isoformat(timespec="seconds") + "Z",
        "today": today.isoformat(),
        "leader": None
        if lease is None or not lease.live(now)
        else {
            "holder": lease.holder,
            "host": lease.host,
            "pid": lease.pid,
            "since": lease.acquired_at.isoformat(timespec="seconds") + "Z",
            "renewed_seconds_ago": _age(lease.renewed_at, now),
            "expires_in_seconds": round((lease.expires_at - now).total_seconds(), 1),
        },
        "schedule": {
            "at": at,
            "timezone": tz.key,
            "next": next_day.isoformat() if next_day else None,
        },
        "runs": [
            {
                "date": r.run_date.isoformat(),
                "status": r.status,
                "decided": int((r.counts or {}).get("decided", 0)),
                "seconds": _age(r.started_at, r.finished_at) if r.finished_at else None,
                "owner": r.owner or None,
                "error": r.error,
            }
            for r in last_runs
        ],
        "steps": [
            {
                "job": job,
                "date": latest[job].run_date.isoformat(),
                "status": latest[job].status,
                "attempts": latest[job].attempts,
                "seconds": round(latest[job].seconds, 2),
                "detail": latest[job].detail,
                "error": latest[job].error,
            }
            for job in STEPS
            if job in latest
        ],
        "policy": None
        if active is None
        else {
            "id": active.id,
            "kind": active.kind,
            "trained_through": active.trained_through.isoformat()
            if active.trained_through
            else None,
            "created_at": active.created_at.isoformat(timespec="seconds") + "Z",
            "age_days": round((now - active.created_at) / timedelta(days=1), 1),
        },
        "awaiting_rewards": {"decisions": int(waiting), "window_closed": int(overdue)},
        "lag_days": None if last_done is None else (today - last_done).days,
        "last_done_run": None if last_done is None else last_done.isoformat(),
    }
