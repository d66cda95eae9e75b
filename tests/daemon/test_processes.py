"""Real `orch daemon` processes on one database: one leader, failover after SIGKILL, a clean
stop on SIGTERM, a database that is not there at start. The clock is real (these are
processes); leases are short so takeovers take seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator import admin
from orchestrator.storage.db import init_schema, make_engine, normalize_url
from tests.conftest import PG_URL
from tests.helpers import seed_customers

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"
ORCH = str(Path(sys.executable).parent / "orch")
LEASE = 3.0
CUSTOMERS = 1200


class Proc:
    def __init__(self, url: str, log: Path, **env: str) -> None:
        self.log = log
        full = {
            **os.environ,
            "ORCH_DATABASE_URL": url,
            "ORCH_LEASE_SECONDS": str(LEASE),
            "ORCH_BATCH_SIZE": "10",
            "ORCH_RETRY_BASE_SECONDS": "1",
            **env,
        }
        self.p = subprocess.Popen(
            [ORCH, "daemon", "--at", "00:00"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout=timeout)  # reaped: its pid is gone for the others


def wait_for(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def one(engine: sa.Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).first()


@pytest.fixture
def ready(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="t")
    seed_customers(engine, CUSTOMERS)
    return engine


def _holder(engine: sa.Engine) -> str:
    row = one(engine, "SELECT holder FROM lease")
    return row[0] if row else ""


def _batches(engine: sa.Engine) -> int:
    row = one(engine, "SELECT batches_done FROM run")
    return int(row[0]) if row else 0


def _day_done(engine: sa.Engine) -> bool:
    row = one(engine, "SELECT COUNT(*) FROM job_run WHERE status IN ('done', 'skipped')")
    return bool(row) and row[0] == 6


def _check_decisions(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        n, distinct = conn.execute(
            sa.text("SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM decision")
        ).one()
        status, counts = conn.execute(sa.text("SELECT status, counts FROM run")).one()
    decided = (counts if isinstance(counts, dict) else __import__("json").loads(counts))["decided"]
    assert status == "done" and n == distinct == decided
    return int(n)


def test_two_daemons_one_leader_and_failover_after_sigkill(
    ready: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    a = Proc(db_url, tmp_path / "a.log")
    b = None
    try:
        wait_for(lambda: _holder(ready).split(":")[1:2] == [str(a.pid)], 30, "a to lead")
        b = Proc(db_url, tmp_path / "b.log")
        wait_for(lambda: "standby" in b.text(), 30, "b to stand by")
        wait_for(lambda: _batches(ready) >= 5, 60, "a's run to be under way")
        killed = time.monotonic()
        a.stop(signal.SIGKILL)
        wait_for(lambda: _holder(ready).split(":")[1:2] == [str(b.pid)], 30, "b to take over")
        took_over = time.monotonic() - killed
        assert took_over <= LEASE * 4 / 3 + 2, took_over
        wait_for(lambda: _day_done(ready), 120, "b to finish the day")
        _check_decisions(ready)
        with ready.connect() as conn:
            steps = dict(conn.execute(sa.text("SELECT job_id, attempts FROM job_run")).all())
        assert steps["run"] == 2  # a's, cut short, and b's, which resumed it
        assert {k: v for k, v in steps.items() if k != "run"} == {
            "import": 1, "segments": 1, "export": 1, "learn": 1, "report": 1
        }  # fmt: skip
        assert "resumed after" in one(ready, "SELECT detail FROM job_run WHERE job_id = 'run'")[0]
        assert b.stop() == 0
    finally:
        a.stop(signal.SIGKILL)
        if b is not None:
            b.stop(signal.SIGKILL)


def test_sigterm_mid_run_exits_0_and_the_run_resumes(
    ready: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    a = Proc(db_url, tmp_path / "a.log")
    try:
        wait_for(lambda: _batches(ready) >= 5, 60, "the run to be under way")
        assert a.stop(signal.SIGTERM) == 0
        assert "SIGTERM received" in a.text() and "stopped" in a.text()
        status, batches = one(ready, "SELECT status, batches_done FROM run")
        assert status == "stopped" and batches < CUSTOMERS // 10
        assert _holder(ready) == ""  # released: a standby need not wait for it to expire
        again = Proc(db_url, tmp_path / "again.log")
        try:
            wait_for(lambda: _day_done(ready), 120, "the day to be finished")
            _check_decisions(ready)
        finally:
            assert again.stop() == 0
    finally:
        a.stop(signal.SIGKILL)


@pytest.fixture
def missing_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], str]]]:
    """(url of a database that is not there yet, make it: returns the same url)."""
    if request.param == "sqlite":
        folder = tmp_path / "later"
        url = f"sqlite:///{folder / 'orch.db'}"

        def make() -> str:
            folder.mkdir()
            return url

        yield url, make
        return
    assert PG_URL is not None
    name = f"orch_down_{uuid.uuid4().hex[:8]}"
    url = (
        sa.make_url(normalize_url(PG_URL)).set(database=name).render_as_string(hide_password=False)
    )
    server = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")

    def make_pg() -> str:
        with server.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        return url

    yield url, make_pg
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    server.dispose()


@pytest.mark.parametrize(
    "missing_db", ["sqlite"] + (["postgresql"] if PG_URL else []), indirect=True
)
def test_a_database_down_at_start_is_retried_then_the_day_runs(
    missing_db: tuple[str, Callable[[], str]], tmp_path: Path
) -> None:
    url, make = missing_db
    a = Proc(url, tmp_path / "a.log")
    try:
        wait_for(lambda: "database unreachable" in a.text(), 30, "a retry line")
        engine = make_engine(make())
        wait_for(lambda: "no schema yet" in a.text(), 30, "the daemon to wait for orch init")
        init_schema(engine)
        admin.apply_plan_file(engine, PLAN, actor="t")
        seed_customers(engine, 50)
        wait_for(lambda: _day_done(engine), 120, "the day to run")
        assert a.stop() == 0
        engine.dispose()
    finally:
        a.stop(signal.SIGKILL)


def test_concurrent_resumes_of_a_crashed_run_claim_it_once(ready: sa.Engine, db_url: str) -> None:
    """A run killed mid-way, then three `orch run` at once: one resumes it, the others are told
    it is in progress (or, arriving after, that it is done); nobody's error lands in the run."""
    env = {**os.environ, "ORCH_DATABASE_URL": db_url}
    cmd = [ORCH, "run", "--date", "2026-11-23", "--batch-size", "10"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _batches(ready) >= 3, 60, "the run to be under way")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    racers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in racers]
    assert sorted(code for code, _ in outcomes)[0] == 0
    for code, err in outcomes:
        assert code == 0 or (code == 2 and "in progress" in err), err
    assert one(ready, "SELECT error FROM run")[0] is None
    _check_decisions(ready)
