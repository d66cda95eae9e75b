"""`orch daemon`: the long-lived process around the day's steps.

- **Start.** Waits for the database with backoff (a clear line per try), checks the schema,
  then schedules, in the plan's time zone: ``lease`` (take or renew the leader lease every
  third of ``ORCH_LEASE_SECONDS``) and ``daily`` (the day at the plan's ``run_at``, or
  ``--at``). On becoming the leader, a day whose time has passed and that is not complete is
  run at once (``catch_up``): a restart, or a standby taking over from a leader that died.
- **One leader.** Only the lease holder runs the day; a standby keeps trying the lease and
  takes over within ``ORCH_LEASE_SECONDS`` (plus a third) of the leader's last renewal.
- **Retries.** A day that fails is retried (``retry``) after 1, 2, 4 ... minutes
  (``ORCH_RETRY_BASE_SECONDS``, at most ``ORCH_RETRY_MAX_SECONDS``, ``ORCH_RETRY_ATTEMPTS``
  times); it resumes at the step that failed.
- **Stop.** SIGTERM or SIGINT: the run commits the batch in hand, the day stops before its next
  step, the lease is released, and the process exits 0. The day resumes on the next start.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator.config import Settings
from orchestrator.daemon.jobs import (
    JOB_ID,
    DayOutcome,
    Folders,
    daily_job,
    parse_time,
    pending_dates,
    plan_run_at,
    plan_timezone,
    schedule,
)
from orchestrator.daemon.lease import LeaderLease
from orchestrator.daemon.metrics import Metrics
from orchestrator.errors import SchemaNotInitialized
from orchestrator.storage.db import current_revision, require_schema, session_scope
from orchestrator.storage.plan_repo import plan_today

log = logging.getLogger("orch.daemon")

QUIET_LOGGERS = ("alembic", "apscheduler", "sqlalchemy", "urllib3", "distributed", "asyncio")


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Our INFO lines, third parties' warnings only (no "Context impl SQLiteImpl." a day)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def retry_delay(attempt: int, base: float, longest: float) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): doubling from ``base``, capped.

    >>> [retry_delay(k, 60, 1800) for k in (1, 2, 3, 6, 9)]
    [60.0, 120.0, 240.0, 1800.0, 1800.0]
    """
    return float(min(base * 2 ** (attempt - 1), longest))


def wait_for_database(
    engine: sa.Engine, stop: threading.Event, *, first: float = 1.0, longest: float = 60.0
) -> bool:
    """Wait until the database answers (True), retrying with backoff, or until ``stop``."""
    delay = first
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            log.warning("database unreachable (%s): retrying in %.0f s", reason, delay)
            stop.wait(delay)
            delay = min(delay * 2, longest)
    return False


class Daemon:
    """One daemon process on ``engine``; :meth:`serve` blocks until stopped."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        *,
        at: str | None = None,
        http_port: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        self.engine, self.settings, self.at, self.http_port = engine, settings, at, http_port
        self.clock = clock
        self.stop = threading.Event()
        self.metrics = Metrics()
        self.folders = Folders.from_settings()
        self.lease: LeaderLease | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.tz = ZoneInfo("UTC")
        self._day_lock = threading.Lock()
        self._attempt = 0
        self._was_leader = False
        self._database_up = False
        self._said_standby = False
        self._at = (6, 0)

    # --- the process ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            log.info(
                "%s received: finishing the batch in hand, then stopping",
                signal.Signals(signum).name,
            )
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def serve(self) -> int:
        """Run until stopped; the exit code (0 on a clean stop, 2 when the schema is wrong)."""
        if not wait_for_database(self.engine, self.stop) or not self._wait_for_schema():
            return 0
        self._database_up = True
        try:
            require_schema(self.engine)
        except SchemaNotInitialized as exc:  # older or newer than this orch: a person decides
            log.error("%s", exc)
            return 2
        self.tz = plan_timezone(self.engine)
        at = self.at or plan_run_at(self.engine)
        hour, minute = parse_time(at)
        self._at = (hour, minute)
        self.lease = LeaderLease(
            self.engine,
            ttl=self.settings.lease_seconds,
            info={"at": at, "timezone": self.tz.key, "http_port": self.http_port},
        )
        server = None
        if self.http_port is not None:
            from orchestrator.daemon.web import serve

            server = serve(self.http_port, self.health, self.metrics.render)
            log.info("serving /healthz and /metrics on port %d", server.server_address[1])
        self.scheduler = BackgroundScheduler(timezone=self.tz)
        schedule(
            self.scheduler,
            self.engine,
            hour=hour,
            minute=minute,
            timezone=self.tz,
            func=self.run_day,
        )
        self.scheduler.add_job(
            self.tick_lease,
            "interval",
            seconds=self.lease.renew_every,
            id="lease",
            name="take or renew the leader lease",
            next_run_time=datetime.now(self.tz),
            coalesce=True,
            max_instances=1,
        )
        self.scheduler.start()
        nxt = self.scheduler.get_job(JOB_ID).next_run_time
        log.info(
            "orch daemon %s: the day at %s %s, next %s; lease %.0f s",
            self.lease.holder,
            at,
            self.tz.key,
            f"{nxt:%Y-%m-%d %H:%M %Z}",
            self.settings.lease_seconds,
        )
        self.stop.wait()
        log.info("stopping: waiting for the step in hand")
        self.scheduler.shutdown(wait=True)
        try:
            self.lease.release()
        except sa.exc.DBAPIError:
            log.warning("could not release the lease; a standby takes it when it expires")
        if server is not None:
            server.shutdown()
        log.info("stopped")
        return 0

    def _wait_for_schema(self) -> bool:
        """Wait while the database has no schema at all (`orch init` may be on its way, as in
        docker-compose); True once it has one, False if stopped first."""
        delay = 1.0
        while not self.stop.is_set():
            if current_revision(self.engine) is not None:
                return True
            log.warning(
                "the database has no schema yet (run `orch init`): retrying in %.0f s", delay
            )
            self.stop.wait(delay)
            delay = min(delay * 2, 60.0)
        return False

    # --- jobs ---------------------------------------------------------------------------------

    def tick_lease(self) -> None:
        assert self.lease is not None
        try:
            leader = self.lease.try_acquire()
            self._database_up = True
        except sa.exc.DBAPIError as exc:
            leader = False
            self._database_up = False
            log.warning("lease not renewed (database: %s)", str(exc.orig or exc).splitlines()[0])
        self.metrics.leader.set(1 if leader else 0)
        self.metrics.database_up.set(1 if self._database_up else 0)
        if leader and not self._was_leader:
            log.info("leader now (%s)", self.lease.holder)
            if self._day_due():
                self._later("catch_up", 0.0)
        elif self._was_leader and not leader:
            log.warning("no longer the leader: another daemon holds the lease")
        elif not leader and not self._was_leader and not self._said_standby:
            log.info("standby: another daemon is the leader")
            self._said_standby = True
        self._was_leader = leader

    def _day_due(self) -> bool:
        """Whether a day whose time has passed is not complete (run it now)."""
        now = self.clock().astimezone(self.tz)
        hour, minute = self._at
        due_today = now >= now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        with session_scope(self.engine) as session:
            today = plan_today(session, self.clock())
        days = pending_dates(self.engine, today)
        return bool(days) and (due_today or days[0] < today)

    def _later(self, job_id: str, seconds: float) -> None:
        assert self.scheduler is not None
        if self.stop.is_set():
            return
        self.scheduler.add_job(
            self.run_day,
            "date",
            run_date=datetime.now(self.tz) + timedelta(seconds=seconds),
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def run_day(self) -> DayOutcome | None:
        """The day's steps, if this daemon is the leader; a retry scheduled if one failed."""
        if self.stop.is_set() or self.lease is None or not self.lease.is_leader():
            return None
        if not self._day_lock.acquire(blocking=False):
            log.info("the day is already running in this daemon")
            return None
        try:
            outcome = daily_job(
                self.engine,
                now=self.clock,
                batch_size=self.settings.batch_size,
                folders=self.folders,
                stop=self.stop,
                still_leader=self.lease.is_leader,
                holder=self.lease.holder,
                observe=self.metrics.observe,
            )
        finally:
            self._day_lock.release()
        if outcome.errors and not self.stop.is_set():
            self._attempt += 1
            if self._attempt <= self.settings.retry_attempts:
                delay = retry_delay(
                    self._attempt, self.settings.retry_base_seconds, self.settings.retry_max_seconds
                )
                self.metrics.retries.inc()
                log.warning(
                    "the day failed (%s): retry %d of %d in %.0f s",
                    outcome.errors[0],
                    self._attempt,
                    self.settings.retry_attempts,
                    delay,
                )
                self._later("retry", delay)
            else:
                log.error(
                    "the day failed %d times; next try at the next scheduled time", self._attempt
                )
                self._attempt = 0
        elif not outcome.errors:
            self._attempt = 0
        return outcome

    # --- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            database = "ok"
        except sa.exc.DBAPIError as exc:
            database = str(exc.orig or exc).splitlines()[0]
        leader = self.lease is not None and self.lease.is_leader()
        body = {
            "status": "ok" if database == "ok" else "degraded",
            "database": database,
            "role": "leader" if leader else "standby",
            "holder": self.lease.holder if self.lease else None,
            "stopping": self.stop.is_set(),
        }
        return database == "ok", body
