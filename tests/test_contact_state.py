"""The contact state never claims to be complete when it disagrees with the decision log:
crashes, resumes, forced reruns, backfills, decisions imports and runs begun before the table
existed (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from orchestrator import admin
from orchestrator.engine.contacts import decode_states
from orchestrator.run import _history, prepare, run_daily
from orchestrator.storage import contact_state
from orchestrator.storage.models import Decision
from orchestrator.storage.run_repo import load_customers, load_entries
from tests.helpers import seed_customers
from tests.test_run import PLAN

DAY = date(2026, 11, 23)
D = [DAY + timedelta(days=i) for i in range(6)]


@pytest.fixture
def ready(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="test")
    seed_customers(engine, 600)
    return engine


class Boom(Exception):
    pass


def crash_after(batches: int) -> Callable[[int, int | None], None]:
    seen = {"n": 0}

    def progress(done: int, total: int | None) -> None:
        seen["n"] += 1
        if seen["n"] > batches:
            raise Boom

    return progress


def crash(engine: sa.Engine, day: date, batches: int, **kw) -> None:
    with pytest.raises(Boom):
        run_daily(engine, day=day, batch_size=100, progress=crash_after(batches), **kw)


def _entries(h) -> set[tuple]:
    return set(
        zip(
            h.row.tolist(),
            h.age.tolist(),
            h.campaign.tolist(),
            h.channel.tolist(),
            h.sent.tolist(),
            h.window_left.tolist(),
            strict=True,
        )
    )


def assert_consistent(engine: sa.Engine, day: date) -> str:
    """If a run of ``day`` would read the states, they say what the log says; the mode."""
    with Session(engine) as session:
        prepared = prepare(session, day)
        mode = contact_state.mode_for(session, day, prepared.lookback_days)
    if mode == "state":
        with engine.connect() as conn:
            raw = load_customers(conn, after=None, limit=10**6, with_state=True)
            log = load_entries(conn, raw.ids, day=day, lookback_days=prepared.lookback_days)
        stored = decode_states(raw.states or [])
        n = len(raw.ids)
        assert _entries(_history(prepared, stored, n)) == _entries(_history(prepared, log, n))
    return mode


def test_daily_runs_keep_the_state_and_it_matches_the_log(ready: sa.Engine) -> None:
    for day in D[:4]:
        run_daily(ready, day=day, batch_size=100)
    assert assert_consistent(ready, D[4]) == "state"


def test_decisions_imported_while_a_run_waits_to_resume(ready: sa.Engine) -> None:
    run_daily(ready, day=D[0], batch_size=100)
    run_daily(ready, day=D[1], batch_size=100)
    crash(ready, D[2], 2)
    with ready.begin() as conn:  # what `orch decisions import` does
        ids = [r[0] for r in conn.execute(sa.text("SELECT customer_id FROM customer"))]
        conn.execute(
            sa.insert(Decision.__table__),  # type: ignore[attr-defined]
            [
                {
                    "run_date": D[0] - timedelta(days=1),
                    "customer_id": c,
                    "campaign_id": "winback",
                    "treatment_id": "win15",
                    "channel": "sms",
                    "group": "test",
                    "propensity": 1.0,
                    "split_share": 1.0,
                    "reason": "policy",
                    "policy_name": "import",
                    "window_end": D[0] + timedelta(days=13),
                    "batch": 0,
                }
                for c in ids
            ],
        )
        contact_state.invalidate(conn)
    run_daily(ready, day=D[2], batch_size=100)  # resumes, reading the log from then on
    assert assert_consistent(ready, D[3]) == "rebuild"
    run_daily(ready, day=D[3], batch_size=100)
    assert assert_consistent(ready, D[4]) == "state"


def test_a_run_begun_before_contact_states_resumed_after(ready: sa.Engine) -> None:
    run_daily(ready, day=D[0], batch_size=100)
    crash(ready, D[1], 3)
    with ready.begin() as conn:  # the run row as the version before left it
        last, batches = conn.execute(
            sa.text("SELECT last_customer_id, batches_done FROM run_partition WHERE run_date=:d"),
            {"d": D[1]},
        ).one()
        for table in ("run_partition", "contact_state", "contact_state_mark"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(
            sa.text(
                "UPDATE run SET spec=NULL, contacts=NULL, contacts_generation=NULL, "
                "partitions=NULL, last_customer_id=:l, batches_done=:b WHERE run_date=:d"
            ),
            {"l": last, "b": batches, "d": D[1]},
        )
    assert run_daily(ready, day=D[1], batch_size=100).status == "done"
    assert assert_consistent(ready, D[2]) == "rebuild"
    run_daily(ready, day=D[2], batch_size=100)
    assert assert_consistent(ready, D[3]) == "state"


def test_a_forced_rerun_that_dies_then_the_next_date_forced(ready: sa.Engine) -> None:
    run_daily(ready, day=D[0], batch_size=100)
    run_daily(ready, day=D[1], batch_size=100)
    crash(ready, D[1], 2, force=True)
    assert assert_consistent(ready, D[2]) == "rebuild"
    run_daily(ready, day=D[2], batch_size=100, force=True)
    assert assert_consistent(ready, D[3]) == "state"


def test_a_backfill_under_an_unfinished_later_run(ready: sa.Engine) -> None:
    run_daily(ready, day=D[0], batch_size=100)
    crash(ready, D[2], 2)
    run_daily(ready, day=D[1], batch_size=100, force=True)  # the date never ran
    assert assert_consistent(ready, D[2]) == "rebuild"
    run_daily(ready, day=D[2], batch_size=100)  # resumed
    assert assert_consistent(ready, D[3]) in ("state", "rebuild")
    run_daily(ready, day=D[3], batch_size=100)
    assert assert_consistent(ready, D[4]) == "state"
