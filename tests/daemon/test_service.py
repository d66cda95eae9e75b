"""The daemon process's parts in-process: retries on a real scheduler, health, metrics, the
wait for a database that is not there yet."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator import admin
from orchestrator.config import Settings
from orchestrator.daemon.jobs import Folders
from orchestrator.daemon.lease import LeaderLease
from orchestrator.daemon.service import Daemon, JsonLines, retry_delay, wait_for_database
from orchestrator.daemon.web import serve
from orchestrator.storage.db import init_schema, make_engine
from tests.helpers import seed_customers

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"


def _daemon(engine: sa.Engine, tmp_path: Path, **settings: object) -> Daemon:
    d = Daemon(engine, Settings(**settings))  # type: ignore[arg-type]
    d.lease = LeaderLease(engine, ttl=30)
    assert d.lease.try_acquire()
    d.scheduler = BackgroundScheduler()
    d.scheduler.start(paused=True)
    return d


def test_a_failed_day_is_retried_with_backoff_then_runs(engine: sa.Engine, tmp_path: Path) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, 60)
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    d = _daemon(engine, tmp_path, retry_base_seconds=30, retry_max_seconds=100, retry_attempts=3)
    d.folders = Folders(exports=blocker)
    try:
        for attempt in (1, 2, 3):
            outcome = d.run_day()
            assert outcome is not None and outcome.errors
            retry = d.scheduler.get_job("retry")  # type: ignore[union-attr]
            wait = (retry.next_run_time - datetime.now(retry.next_run_time.tzinfo)).total_seconds()
            assert abs(wait - min(30 * 2 ** (attempt - 1), 100)) < 5
        d.scheduler.remove_job("retry")  # type: ignore[union-attr]
        assert d.run_day().errors  # type: ignore[union-attr]
        assert d.scheduler.get_job("retry") is None  # type: ignore[union-attr]  # gave up
        blocker.unlink()
        assert d.run_day().errors == []  # type: ignore[union-attr]
        text = d.metrics.render().decode()
        assert 'orch_job_failures_total{job="export"} 4.0' in text
        assert "orch_day_retries_total 3.0" in text and "orch_runs_total 1.0" in text
    finally:
        d.scheduler.shutdown(wait=False)  # type: ignore[union-attr]


def test_only_the_leader_runs_the_day(engine: sa.Engine, tmp_path: Path) -> None:
    d = _daemon(engine, tmp_path)
    try:
        assert d.lease is not None
        d.lease.release()
        assert d.run_day() is None
    finally:
        d.scheduler.shutdown(wait=False)  # type: ignore[union-attr]


def test_healthz_and_metrics_over_http(engine: sa.Engine, tmp_path: Path) -> None:
    d = _daemon(engine, tmp_path)
    d.metrics.leader.set(1)
    server = serve(0, d.health, d.metrics.render, host="127.0.0.1")
    port = server.server_address[1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as r:
            body = json.loads(r.read())
        assert r.status == 200 and body["database"] == "ok" and body["role"] == "leader"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            text = r.read().decode()
        assert "orch_leader 1.0" in text and "orch_database_up" in text
        assert all(line.startswith(("orch_", "#")) for line in text.splitlines() if line.strip())
    finally:
        server.shutdown()
        d.scheduler.shutdown(wait=False)  # type: ignore[union-attr]


def test_an_unreachable_database_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite in a folder that does not exist yet cannot be opened: the daemon retries with a
    clear line, and goes on once the folder (and the database) are there."""
    folder = tmp_path / "later"
    engine = make_engine(f"sqlite:///{folder / 'orch.db'}")
    stop = threading.Event()
    timer = threading.Timer(1.5, lambda: folder.mkdir())
    timer.start()
    with caplog.at_level(logging.WARNING, logger="orch.daemon"):
        assert wait_for_database(engine, stop, first=0.2, longest=0.5)
    assert any("database unreachable (unable to open database file)" in m for m in caplog.messages)
    init_schema(engine)
    stop.set()
    assert not wait_for_database(make_engine(f"sqlite:///{tmp_path / 'x' / 'y.db'}"), stop)
    engine.dispose()


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [retry_delay(k, 60, 1800) for k in range(1, 8)] == [60, 120, 240, 480, 960, 1800, 1800]


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "orch.daemon", logging.INFO, __file__, 1, "run %s: %d", ("d", 3), None
    )
    line = json.loads(JsonLines().format(record))
    assert (
        line["level"] == "info"
        and line["message"] == "run d: 3"
        and line["logger"] == "orch.daemon"
    )
