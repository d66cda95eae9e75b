"""The closed loop end to end: real SQLite databases driven through the production use-cases.

Runs are small (a few hundred customers, a week or so) and seeded, so every number here is
reproducible; the world's exact expected values make the comparisons need no tolerance.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.storage.db import make_engine
from simulations.loop import LEARNERS, SimulationResult, simulate
from simulations.scenario import list_scenarios, load_scenario

CUSTOMERS, DAYS, SEED = 300, 8, 1
ORCH = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"


@functools.cache
def _baselines(scenario: str) -> SimulationResult:
    """uniform and the oracle (and on tiny static) on a small world, in process (shared)."""
    return simulate(
        scenario,
        ["uniform", "oracle"] + (["static"] if scenario == "tiny" else []),
        customers=CUSTOMERS,
        days=DAYS,
        seed=SEED,
        workers=1,
    )


@pytest.mark.parametrize("scenario", list_scenarios())
def test_every_scenario_runs_and_the_oracle_is_best(scenario: str) -> None:
    result = _baselines(scenario)
    assert (result.scenario, result.customers, result.days, result.seed) == (
        scenario,
        CUSTOMERS,
        DAYS,
        SEED,
    )
    assert result.measure_from == DAYS // 2  # no drift within 8 days: the second half
    for name, run in result.runs.items():
        assert len(run.value) == len(run.sends) == len(run.decisions) == DAYS, name
        assert all(math.isfinite(v) for v in run.value), name
        assert run.decisions[0] > 0, name
        assert all(v == 0 for v, s in zip(run.value, run.sends, strict=True) if s == 0), name
        assert run.policy_versions == 0 and run.promotions == [], name
    oracle, uniform = (result.total(n, start=0) for n in ("oracle", "uniform"))
    assert oracle > uniform or oracle == uniform == 0, (oracle, uniform)
    if "static" in result.runs:
        assert oracle > result.total("static", start=0)
    # Under the same rules, it only sends what is worth sending, every day (a journey's steps
    # are rules too: they go out whatever the policy would have sent).
    if not load_scenario(scenario).plan.get("journeys"):
        assert min(result.runs["oracle"].value) >= 0
    if result.total("oracle") > 0:
        assert result.share_of_oracle("oracle") == 1.0
        share = result.share_of_oracle("uniform")
        assert share == pytest.approx(result.total("uniform") / result.total("oracle"))
        assert share is not None and share < 1
    else:  # nothing to be had: no share to give
        assert result.share_of_oracle("oracle") is None


def test_all_harmful_the_oracle_sends_nothing_and_uniform_loses() -> None:
    result = _baselines("all-harmful")
    oracle, uniform = result.runs["oracle"], result.runs["uniform"]
    assert oracle.sends == [0] * DAYS and oracle.value == [0.0] * DAYS
    assert min(oracle.decisions) > 0  # it decided, and what it decided was "send nothing"
    assert sum(uniform.sends) > 0 and result.total("uniform", start=0) < 0
    assert all(v <= 0 for v in uniform.value)
    data = result.to_json()["policies"]
    assert data["oracle"]["incremental_value"] == 0 and data["uniform"]["incremental_value"] <= 0


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    first = _baselines("tiny").runs["uniform"]
    kwargs = {"customers": CUSTOMERS, "days": DAYS, "workers": 1}
    again = simulate("tiny", ["uniform"], seed=SEED, **kwargs).runs["uniform"]
    other = simulate("tiny", ["uniform"], seed=SEED + 1, **kwargs).runs["uniform"]
    assert (again.value, again.sends, again.decisions) == (
        first.value,
        first.sends,
        first.decisions,
    )
    assert other.value != first.value


def test_unknown_contenders_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown contender 'nope'"):
        simulate("tiny", ["uniform", "nope"], customers=50, days=1, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", [n for n in LEARNERS if n != "egreedy"])
def test_learners_learn_in_the_loop(name: str, tmp_path: Path) -> None:
    """Rewards mature after the 7-day windows, so versions come from day 6 on."""
    days = 9
    result = simulate("tiny", [name], customers=200, days=days, seed=2, out_dir=tmp_path, workers=1)
    run = result.runs[name]
    assert run.promotions, "no version was ever promoted"
    assert run.promotions == sorted(set(run.promotions)) and run.promotions[-1] < days
    assert run.policy_versions >= len(run.promotions)
    assert run.database_url == f"sqlite:///{tmp_path / f'{name}.db'}"
    assert result.to_json()["policies"][name]["first_promotion_day"] == run.promotions[0]
    # The runs after a promotion were decided by the promoted version of this policy.
    start = result.runs[name].promotions[0] + 1
    engine = make_engine(run.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT policy_name, policy_version_id FROM run ORDER BY run_date")
        ).all()
        kinds = conn.execute(sa.text("SELECT DISTINCT kind FROM policy_version")).scalars().all()
    engine.dispose()
    assert len(rows) == days and {r[0] for r in rows} == {name}
    assert all(r[1] is None for r in rows[:start]), rows
    assert start < days and all(r[1] is not None for r in rows[start:]), rows
    assert kinds == [name]


def test_parallel_processes_give_the_same_runs(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    result = simulate(
        "tiny",
        ["static", "oracle"],
        customers=CUSTOMERS,
        days=DAYS,
        seed=SEED,
        out_dir=tmp_path,
        workers=2,
        progress=lambda *msg: seen.append(msg),
    )
    serial = _baselines("tiny")
    for name in ("static", "oracle"):
        got, want = result.runs[name], serial.runs[name]
        assert (got.value, got.sends, got.decisions) == (want.value, want.sends, want.decisions)
        assert sorted(d for n, d, _ in seen if n == name) == list(range(1, DAYS + 1)), seen
        assert (tmp_path / f"{name}.db").stat().st_size > 0
    assert all(total == DAYS for *_, total in seen)


def _orch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [ORCH, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_cli_simulate_prints_json_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "tiny", "--policy", "uniform", "--policy", "lints", "--format", "json"]
    done = _orch(*args, "--days", "6", "--customers", "200", "--out", str(out), "--workers", "1")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data["policies"]) == {"uniform", "lints"}
    assert (data["scenario"], data["customers"], data["days"]) == ("tiny", 200, 6)
    for name, pol in data["policies"].items():
        assert "share_of_oracle" in pol and pol["share_of_oracle"] is None, name
        assert len(pol["daily"]["value"]) == 6, name
    assert json.loads((out / "results.json").read_text()) == data
    png = (out / "learning_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert {"uniform.db", "lints.db"} <= {p.name for p in out.iterdir()}


def test_cli_bad_input_is_one_line_and_exit_2() -> None:
    done = _orch("simulate", "tiny", "--policy", "uniform", "--policy", "nope")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown contender 'nope'" in lines[0], done.stderr
    assert done.stdout == ""


def test_cli_unknown_scenario_is_bad_input() -> None:
    done = _orch("simulate", "no-such-world", "--policy", "uniform")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such scenario" in lines[0], done.stderr
    assert done.returncode == 2, (
        "BUG: an unknown scenario name is bad input, but `orch simulate` exits "
        f"{done.returncode} with {lines[0]!r}: ScenarioError (a ValueError, not an InputError) "
        "from load_scenario is not turned into a one-line exit-2 error"
    )


def test_cli_scenarios_lists_the_five() -> None:
    done = _orch("scenarios")
    assert done.returncode == 0, done.stderr
    names = set(list_scenarios())
    assert names == {"tiny", "standard", "drift", "all-harmful", "journeys"}
    listed = {line.split("│")[1].strip() for line in done.stdout.splitlines() if "│" in line}
    assert names <= listed


def test_the_journeys_world_enters_customers_and_measures_each_step(tmp_path: Path) -> None:
    """Carts left in the world start the journey through `events import`; its steps go out
    ahead of the policy and get an uplift per step against the journey's control group."""
    from datetime import timedelta

    from orchestrator.reports.uplift import uplift_report
    from orchestrator.storage.db import make_engine

    result = simulate("journeys", ["uniform"], customers=300, days=12, seed=3, out_dir=tmp_path)
    assert result.runs["uniform"].decisions[0] > 0
    engine = make_engine(f"sqlite:///{tmp_path / 'uniform.db'}")
    with engine.connect() as conn:
        steps = dict(
            conn.exec_driver_sql(
                "SELECT journey_step, COUNT(*) FROM decision WHERE reason = 'journey' "
                "GROUP BY journey_step"
            ).all()
        )
    assert steps.get(1, 0) > 20 and steps.get(2, 0) > 0
    spec = load_scenario("journeys")
    report = uplift_report(
        engine,
        as_of=spec.start + timedelta(days=40),
        journey="abandoned_cart",
        by=["step"],
    )
    assert {r.segment["step"] for r in report.rows} == {"step 1", "step 2"}
    assert all(r.decisions_control > 0 for r in report.rows)
    engine.dispose()
