"""The daily run and reward maturation on a Dask LocalCluster (two worker processes,
PostgreSQL): the same decisions and rewards as one process, and a worker killed mid-run loses
nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.rewards import mature_rewards
from orchestrator.run import run_daily
from orchestrator.storage.models import Decision, Event, Reward, Run, RunPartition
from tests.conftest import PG_URL
from tests.helpers import seed_customers
from tests.test_run import PLAN

DAY = date(2026, 11, 23)


# The Dask run needs PostgreSQL: these tests run where it is configured (CI sets it), and only
# on it (on SQLite the run refuses workers; tests/test_run.py checks that).
pytestmark = [
    pytest.mark.skipif(PG_URL is None, reason="set ORCH_TEST_POSTGRES_URL (CI does)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


@pytest.fixture
def pg(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="test")
    seed_customers(engine, 3000)
    return engine


def decisions(engine: sa.Engine) -> list[tuple]:
    with Session(engine) as s:
        return sorted(
            (d.customer_id, d.campaign_id, d.treatment_id, d.group, round(d.propensity, 12))
            for d in s.exec(select(Decision))
        )


def test_two_workers_decide_as_one_process(pg: sa.Engine) -> None:
    single = run_daily(pg, day=DAY, batch_size=500)
    expected = decisions(pg)
    report = run_daily(pg, day=DAY, batch_size=97, force=True, workers=2, partition_size=400)
    assert report.workers == 2 and report.partitions >= 4
    assert decisions(pg) == expected
    assert report.counts == single.counts
    with Session(pg) as s:
        assert s.exec(select(Run)).one().status == "done"
        assert {p.status for p in s.exec(select(RunPartition))} == {"done"}


def test_a_worker_killed_mid_run_loses_nothing(pg: sa.Engine) -> None:
    run_daily(pg, day=DAY, batch_size=500)
    expected = decisions(pg)
    killed: list[int] = []

    def kill_a_worker() -> None:
        """Once some batches are in, SIGKILL the worker process that is writing one."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            with pg.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT owner FROM run_partition WHERE status = 'running' "
                        "AND batches_done >= 2"
                    )
                ).all()
            for (owner,) in rows:
                pid = int(owner.rpartition(":")[2])
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    report = run_daily(pg, day=DAY, batch_size=20, force=True, workers=2, partition_size=500)
    killer.join(timeout=5)
    assert killed, "no worker was caught mid-partition"
    assert report.status == "done"
    assert decisions(pg) == expected
    with Session(pg) as s:
        parts = list(s.exec(select(RunPartition)))
    assert max(p.attempts for p in parts) >= 2  # the killed partition was taken up again


def _rewards(engine: sa.Engine) -> list[tuple]:
    with Session(engine) as s:
        return sorted(
            (r.decision_id, r.value, r.revenue, r.cost, r.converted, r.window_days)
            for r in s.exec(select(Reward))
        )


def test_two_workers_mature_as_one_process(pg: sa.Engine) -> None:
    """Rewards matured in ranges on a LocalCluster equal those of one process, to the cent."""
    run_daily(pg, day=DAY, batch_size=500)
    run_daily(pg, day=DAY + timedelta(days=2), batch_size=500)
    with Session(pg) as s:
        customers = sorted({d.customer_id for d in s.exec(select(Decision))})
        s.add_all(
            Event(
                source_event_id=f"m{i}",
                customer_id=customers[(i * 7) % len(customers)],
                occurred_at=datetime.combine(DAY, datetime.min.time())
                + timedelta(hours=5 * i % (24 * 20)),
                type="purchase" if i % 5 else "return",
                amount=round(10 + (i % 37) * 1.37, 2) * (1 if i % 5 else -1),
            )
            for i in range(4000)
        )
        s.commit()
    as_of = DAY + timedelta(days=30)
    single = mature_rewards(pg, as_of=as_of)
    expected = _rewards(pg)
    assert single.matured == len(expected) > 0
    with pg.begin() as conn:
        conn.exec_driver_sql("DELETE FROM reward")
    spread = mature_rewards(pg, as_of=as_of, chunk=300, workers=2)
    assert _rewards(pg) == expected
    assert (spread.matured, spread.converted) == (single.matured, single.converted)
    assert spread.value == pytest.approx(single.value)
    assert mature_rewards(pg, as_of=as_of, workers=2).matured == 0
