"""`orch daemon`: the day's steps on a schedule, one leader among daemons, metrics and health.

``jobs`` (the day's steps, pure of the process), ``lease`` (leader election on the database),
``service`` (the process: start, signals, retries), ``metrics``, ``web`` and ``status``.
"""

from orchestrator.daemon.jobs import (
    JOB_ID,
    MISFIRE_GRACE_SECONDS,
    STEPS,
    DayOutcome,
    Folders,
    StepResult,
    daily_job,
    parse_time,
    pending_dates,
    plan_timezone,
    schedule,
)

__all__ = [
    "JOB_ID",
    "MISFIRE_GRACE_SECONDS",
    "STEPS",
    "DayOutcome",
    "Folders",
    "StepResult",
    "daily_job",
    "parse_time",
    "pending_dates",
    "plan_timezone",
    "schedule",
]
