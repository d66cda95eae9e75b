"""The daily run against a real database (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import InputError, PlanError, RunInProgress
from orchestrator.explain import explain_customer
from orchestrator.export import export_send_list
from orchestrator.run import run_daily
from orchestrator.storage.db import make_engine
from orchestrator.storage.models import Decision, Run, utcnow
from tests.helpers import seed_customers

PLAN = Path(__file__).parent / "data" / "plan_run.yaml"
DAY = date(2026, 11, 23)


@pytest.fixture
def ready(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="test")
    seed_customers(engine, 600)
    return engine


def decisions(engine: sa.Engine, day: date | None = None) -> list[tuple]:
    with Session(engine) as s:
        q = select(Decision)
        if day:
            q = q.where(Decision.run_date == day)
        return sorted(
            (
                d.run_date,
                d.customer_id,
                d.campaign_id,
                d.treatment_id,
                d.group,
                round(d.propensity, 12),
                d.reason,
                d.window_end,
            )
            for d in s.exec(q)
        )


def test_run_logs_one_decision_per_decided_customer(ready: sa.Engine) -> None:
    report = run_daily(ready, day=DAY, batch_size=100)
    rows = decisions(ready)
    assert report.status == "done" and report.batches == 6 and report.customers == 600
    assert len(rows) == report.decided > 100
    assert len({r[1] for r in rows}) == len(rows)
    reasons = {r[6] for r in rows}
    assert reasons == {"priority", "policy"}
    assert {r[4] for r in rows} == {"test", "control"}
    for r in rows:
        assert 0 < r[5] <= 1
        if r[2] == "winback":
            assert r[7] == DAY + timedelta(days=14)
    with Session(ready) as s:
        run = s.exec(select(Run)).one()
    assert run.status == "done" and run.counts["decided"] == len(rows)


def test_rerun_of_a_finished_date_changes_nothing(ready: sa.Engine, snapshot) -> None:
    run_daily(ready, day=DAY, batch_size=100)
    before = snapshot(ready)
    again = run_daily(ready, day=DAY, batch_size=100)
    assert again.status == "already_done"
    assert snapshot(ready) == before


def test_force_redoes_a_date_with_the_same_decisions(ready: sa.Engine) -> None:
    run_daily(ready, day=DAY, batch_size=100)
    first = decisions(ready)
    run_daily(ready, day=DAY, batch_size=100, force=True)
    assert decisions(ready) == first  # same inputs and seed: the same decisions
    run_daily(ready, day=DAY, batch_size=100, force=True, seed=12345)
    changed = decisions(ready)
    assert changed != first
    # test/control does not depend on the seed: the same customers are controls for a campaign
    assert {(r[1], r[2]) for r in first if r[4] == "control"} & {
        (r[1], r[2]) for r in changed if r[4] == "control"
    }


def test_runs_go_forward_in_time(ready: sa.Engine, snapshot) -> None:
    run_daily(ready, day=DAY, batch_size=200)
    before = snapshot(ready)
    with pytest.raises(InputError, match="already done and runs go forward in time"):
        run_daily(ready, day=DAY - timedelta(days=1), batch_size=200)
    assert snapshot(ready) == before


def test_dry_run_writes_nothing(ready: sa.Engine, snapshot) -> None:
    before = snapshot(ready)
    report = run_daily(ready, day=DAY, dry_run=True, batch_size=100)
    assert report.status == "dry_run" and report.decided > 0
    assert snapshot(ready) == before


def test_history_blocks_next_days(ready: sa.Engine) -> None:
    for offset in range(10):
        run_daily(ready, day=DAY + timedelta(days=offset), batch_size=300)
    rows = decisions(ready)
    by_customer: dict[str, list[tuple]] = {}
    for r in rows:
        by_customer.setdefault(r[1], []).append(r)
    measured = {"birthday", "vip", "crosssell", "winback"}
    for cust_rows in by_customer.values():
        sends = [r for r in cust_rows if r[2] and r[4] == "test"]
        for r in sends:
            week = [p for p in sends if 0 <= (r[0] - p[0]).days < 7]
            assert len(week) <= 2
            email = [
                p
                for p in sends
                if p[2] != "winback" and p[2] != "nudge" and 0 <= (r[0] - p[0]).days < 5
            ]
            assert len(email) <= 1
        windows = sorted((r[0], r[7]) for r in cust_rows if r[2] in measured)
        for (_, e1), (s2, _) in zip(windows, windows[1:], strict=False):
            assert s2 >= e1, "two open measurement windows"


def test_concurrent_run_is_refused(ready: sa.Engine, snapshot) -> None:
    with Session(ready) as s:
        s.add(
            Run(
                run_date=DAY,
                status="running",
                owner=f"{socket.gethostname()}:{os.getpid()}",
                heartbeat_at=utcnow(),
            )
        )
        s.commit()
    before = snapshot(ready)
    with pytest.raises(RunInProgress, match="in progress"):
        run_daily(ready, day=DAY + timedelta(days=1), batch_size=100)
    assert snapshot(ready) == before


def test_unfinished_run_must_be_resumed_first(ready: sa.Engine) -> None:
    with Session(ready) as s:
        s.add(Run(run_date=DAY, status="failed", owner="elsewhere:1", heartbeat_at=utcnow()))
        s.commit()
    with pytest.raises(InputError, match=f"the run for {DAY} did not finish"):
        run_daily(ready, day=DAY + timedelta(days=1), batch_size=100)
    assert run_daily(ready, day=DAY, batch_size=100).status == "done"


def test_plan_invalid_for_current_data_is_refused(ready: sa.Engine, snapshot) -> None:
    with ready.begin() as conn:
        conn.execute(sa.text("UPDATE campaign SET target = 'lifecyle_stage == 1' WHERE id = 'vip'"))
    before = snapshot(ready)
    with pytest.raises(PlanError, match="unknown field 'lifecyle_stage'"):
        run_daily(ready, day=DAY, batch_size=100)
    assert snapshot(ready) == before


def test_crash_and_resume_gives_no_duplicate_and_no_missing_decision(
    ready: sa.Engine, db_url: str
) -> None:
    """Kill a real `orch run` between batches, then resume it: same decisions as a clean run."""
    env = {**os.environ, "ORCH_DATABASE_URL": db_url}
    cmd = [
        str(Path(sys.executable).parent / "orch"),
        "run",
        "--date",
        str(DAY),
        "--batch-size",
        "10",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = make_engine(db_url)
    deadline = time.monotonic() + 60
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            done = conn.execute(sa.text("SELECT batches_done FROM run")).scalar()
        if done and done >= 5:
            proc.send_signal(signal.SIGKILL)
            killed_at = done
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed"
    with engine.connect() as conn:
        status, batches = conn.execute(sa.text("SELECT status, batches_done FROM run")).one()
    assert status == "running" and batches < 60
    resumed = run_daily(engine, day=DAY, batch_size=10)
    assert resumed.resumed_after_batches >= 5
    after_crash = decisions(engine)
    assert len({r[1] for r in after_crash}) == len(after_crash)

    clean = run_daily(engine, day=DAY, batch_size=10, force=True)
    assert decisions(engine) == after_crash
    assert clean.counts == resumed.counts
    engine.dispose()


def test_explain_tells_why(ready: sa.Engine) -> None:
    run_daily(ready, day=DAY, batch_size=300)
    with Session(ready) as s:
        d = s.exec(select(Decision).where(Decision.campaign_id == "winback")).first()
    assert d is not None
    x = explain_customer(ready, d.customer_id, DAY)
    assert x.logged is not None and x.logged["campaign"] == "winback"
    lines = {line.campaign_id: line for line in x.campaigns}
    assert lines["winback"].possible
    assert any("rule false" in w for w in lines["vip"].why_not + lines["crosssell"].why_not)
    # The rule comes with this customer's values of its fields (a winback customer is lapsed).
    crosssell = next(w for w in lines["crosssell"].why_not if w.startswith("rule false"))
    assert 'lifecycle_stage = "lapsed"' in crosssell and "email_opt_in = " in crosssell
    nxt = explain_customer(ready, d.customer_id, DAY + timedelta(days=1))
    until = DAY + timedelta(days=14)
    assert nxt.window_open_until == until
    for line in nxt.campaigns:
        opened = f"measurement window of another campaign open until {until}"
        assert (opened in line.why_not) == (line.campaign_id != "nudge")  # nudge is unmeasured
    with pytest.raises(InputError, match="no customer with id 'ghost'"):
        explain_customer(ready, "ghost", DAY)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_send_list(ready: sa.Engine, tmp_path: Path, fmt: str) -> None:
    run_daily(ready, day=DAY, batch_size=300)
    out = tmp_path / f"sends.{fmt}"
    n = export_send_list(ready, day=DAY, out=out, channel="email")
    expected = [
        r for r in decisions(ready) if r[4] == "test" and r[2] in {"birthday", "vip", "crosssell"}
    ]
    assert n == len(expected) > 0
    if fmt == "parquet":
        table = pq.read_table(out).to_pylist()
        assert {row["campaign_id"] for row in table} <= {"birthday", "vip", "crosssell"}
        assert all(row["payload_template"] for row in table)
    with pytest.raises(InputError, match="no run for"):
        export_send_list(ready, day=DAY + timedelta(days=5), out=out)
    with pytest.raises(InputError, match="unknown export format"):
        export_send_list(ready, day=DAY, out=tmp_path / "x.xlsx")


def test_contexts_are_logged_for_every_decision(ready: sa.Engine) -> None:
    from orchestrator.storage.run_repo import load_contexts

    run_daily(ready, day=DAY, batch_size=128)
    rows = decisions(ready)
    with ready.connect() as conn:
        logged = load_contexts(conn, [DAY])[DAY]
        names, row_of, matrix = logged.names, logged.row_of, logged.matrix
        stages = dict(
            conn.execute(
                sa.text("SELECT customer_id, lifecycle_stage FROM customer_features")
            ).all()
        )
    assert set(row_of) == {r[1] for r in rows}
    assert matrix.shape == (len(rows), len(names)) and matrix.dtype.name == "float32"
    chosen = {r[1]: f"{r[2]}/{r[3]}" if r[2] else "(send nothing)" for r in rows}
    assert logged.eligible.shape == (len(rows), len(logged.actions))
    for cid, i in row_of.items():
        assert logged.eligible[i, logged.actions.index(chosen[cid])], "logged action not eligible"
        hot = [n for j, n in enumerate(names) if n.startswith("lifecycle_stage=") and matrix[i, j]]
        assert hot == [f"lifecycle_stage={stages[cid]}"]


def test_propensity_splits_into_policy_probability_and_split_share(ready: sa.Engine) -> None:
    run_daily(ready, day=DAY, batch_size=200)
    cf = {c.id: c.control_fraction for c in admin.current_plan(ready).campaigns}
    with Session(ready) as s:
        rows = list(s.exec(select(Decision)))
    for d in rows:
        expected = (
            1.0
            if d.campaign_id is None
            else (cf[d.campaign_id] if d.group == "control" else 1 - cf[d.campaign_id])
        )
        assert abs(d.split_share - expected) < 1e-12
        assert 0 < d.propensity / d.split_share <= 1 + 1e-12


# --- one core for any slicing: batch sizes, partitions, resumes, explain -----------------------


def test_batch_size_does_not_change_any_decision(ready: sa.Engine) -> None:
    run_daily(ready, day=DAY, batch_size=7)
    small = decisions(ready)
    with Session(ready) as s:
        small_counts = s.exec(select(Run)).one().counts
    report = run_daily(ready, day=DAY, batch_size=1000, force=True)
    assert decisions(ready) == small and report.counts == small_counts


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_on_sqlite_are_refused_and_nothing_is_written(ready: sa.Engine, snapshot) -> None:
    before = snapshot(ready)
    with pytest.raises(InputError, match="need PostgreSQL"):
        run_daily(ready, day=DAY, workers=2)
    assert snapshot(ready) == before


class _Stop(Exception):
    pass


def test_a_resumed_run_decides_with_the_spec_it_started_with(
    ready: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plan changed between a crash and the resume does not leak into the resumed batches."""
    run_daily(ready, day=DAY, batch_size=100)
    clean = decisions(ready)

    def stop_after_two(done: int, _total: int | None) -> None:
        if done >= 200:
            raise _Stop

    with pytest.raises(_Stop):
        run_daily(ready, day=DAY, batch_size=100, force=True, progress=stop_after_two)
    changed = tmp_path / "changed.yaml"
    changed.write_text(PLAN.read_text().replace("control_fraction: 0.1", "control_fraction: 0.5"))
    assert changed.read_text() != PLAN.read_text()
    admin.apply_plan_file(ready, changed, actor="test")
    with caplog.at_level(logging.WARNING, logger="orch.run"):
        resumed = run_daily(ready, day=DAY, batch_size=100)
    assert resumed.resumed_after_batches == 2
    assert decisions(ready) == clean
    assert any("with plan revision 1, which it started with" in m for m in caplog.messages)


def test_explain_shows_the_choice_the_run_made(ready: sa.Engine) -> None:
    run_daily(ready, day=DAY, batch_size=50)
    rows = decisions(ready)
    rng = np.random.default_rng(3)
    for i in rng.choice(len(rows), size=25, replace=False).tolist():
        r = rows[i]
        x = explain_customer(ready, r[1], DAY)
        label = f"{r[2]}/{r[3]}" if r[2] else "(send nothing)"
        assert x.would_choose == label, r


def test_contact_state_decides_as_the_decision_log(
    ready: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Runs that read the contact state decide exactly as runs that rebuild it from the log,
    forced reruns of the latest date and of an older one included."""
    from orchestrator.storage import contact_state

    days = [DAY + timedelta(days=i) for i in range(8)]
    narrow = tmp_path / "narrow.yaml"  # fewer customers decided: the rerun must drop the rest
    narrow.write_text(
        PLAN.read_text().replace("target: 'lifecycle_stage == \"at_risk\"'", "target: 'false'")
    )
    assert narrow.read_text() != PLAN.read_text()

    def play(engine: sa.Engine, *, rebuild: bool) -> None:
        for i, day in enumerate(days):
            if rebuild:
                with engine.begin() as conn:
                    contact_state.invalidate(conn)
            run_daily(engine, day=day, batch_size=130)
            if i == 3:  # redo the latest date with another plan and seed
                admin.apply_plan_file(engine, narrow, actor="test")
                run_daily(engine, day=day, batch_size=130, force=True, seed=5)
                admin.apply_plan_file(engine, PLAN, actor="test")
        run_daily(engine, day=days[2], batch_size=130, force=True, seed=6)  # an older date
        run_daily(engine, day=days[-1] + timedelta(days=1), batch_size=130, force=True)

    play(ready, rebuild=False)
    kept = decisions(ready)
    with Session(ready) as s:
        modes = {r.run_date: r.contacts for r in s.exec(select(Run))}
    assert modes[days[0]] == "rebuild" and modes[days[4]] == "state" and modes[days[3]] == "state"
    assert modes[days[-1] + timedelta(days=1)] == "rebuild"  # after the older date's rerun

    other = make_engine(db_url)
    with other.begin() as conn:
        for table in ("decision_context", "decision", "run_partition", "run", "contact_state"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        contact_state.invalidate(conn)
    play(other, rebuild=True)
    assert decisions(other) == kept
    other.dispose()


def test_a_task_of_a_replaced_run_writes_nothing(ready: sa.Engine) -> None:
    """A worker still deciding for a run that was forced again cannot write into the new one."""
    from orchestrator.run import run_partition

    run_daily(ready, day=DAY, batch_size=100)
    with Session(ready) as s:
        old = s.exec(select(Run)).one().token
    run_daily(ready, day=DAY, batch_size=100, force=True)
    after = decisions(ready)
    with pytest.raises(InputError, match="was replaced"):
        run_partition(ready, DAY, 0, 100, token=old)
    assert decisions(ready) == after


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "a seed is a whole number from 0"),
        ({"seed": 2**40}, "a seed is a whole number from 0"),
        ({"day": date(9999, 12, 31)}, "more than 366 days ahead"),
        ({"batch_size": 0}, "give at least 1"),
    ],
)
def test_impossible_run_arguments_are_refused_before_anything_is_written(
    ready: sa.Engine, snapshot, kwargs: dict, message: str
) -> None:
    before = snapshot(ready)
    args = {"day": DAY, "batch_size": 100, **kwargs}
    with pytest.raises(InputError, match=message):
        run_daily(ready, **args)
    assert snapshot(ready) == before
    assert run_daily(ready, day=DAY, batch_size=100).status == "done"  # nothing left blocking


def test_a_payload_field_reference_carries_each_customers_value(
    engine: sa.Engine, tmp_path: Path
) -> None:
    # A cross-sell template gets the category to show: the customer's next_category, here
    # set by hand; the country comes from the customer's attributes.
    plan = PLAN.read_text().replace(
        "payload: {template: cs-bogo}",
        'payload: {template: cs-bogo, category: "{next_category}", country: "{country}"}',
    )
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    admin.apply_plan_file(engine, path, actor="test")
    ids = seed_customers(engine, 300)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE customer_features SET next_category = 'home' WHERE customer_id < :c"),
            {"c": ids[150]},
        )
    run_daily(engine, day=DAY)
    out = tmp_path / "sends.parquet"
    export_send_list(engine, day=DAY, out=out)
    rows = [r for r in pq.read_table(out).to_pylist() if r["treatment_id"] == "bogo"]
    assert rows
    for r in rows:
        assert r["payload_category"] == ("home" if r["customer_id"] < ids[150] else None)
        assert r["payload_country"] in {"ES", "FR", "DE"}
    other = [r for r in pq.read_table(out).to_pylist() if r["treatment_id"] == "pct10"]
    assert all(r["payload_category"] is None for r in other)
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan.replace("{next_category}", "{next_categry}"))
    with pytest.raises(PlanError, match="next_categry.*names no stored customer field"):
        admin.apply_plan_file(engine, bad, actor="test")
