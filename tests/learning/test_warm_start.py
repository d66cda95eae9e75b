"""Warm start from another system's logs: checks, training, estimates, nothing lost on error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import ImportFileError
from orchestrator.learning.warm_start import import_logs
from orchestrator.storage.models import PolicyVersion

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"


def _write_logs(path: Path, n: int = 600, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    actions = ["crosssell/pct10", "crosssell/bogo", "vip/early", ""]
    lines = ["customer_id,action,propensity,reward,monetary,lifecycle_stage=active"]
    for i in range(n):
        a = actions[rng.integers(0, 4)]
        active = int(rng.random() < 0.5)
        reward = (30.0 if a == "crosssell/bogo" and active else 5.0) + rng.normal()
        lines.append(f"C{i:05d},{a},0.25,{reward:.2f},{rng.gamma(2, 40):.1f},{active}")
    path.write_text("\n".join(lines) + "\n")


def test_warm_start_trains_a_candidate_and_estimates_it(engine: sa.Engine, tmp_path: Path) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    logs = tmp_path / "logs.csv"
    _write_logs(logs)
    report = import_logs(engine, logs, actor="ana")
    assert report.rows == 600 and report.trained_on + report.held_out == 600
    assert report.context_features == ["monetary", "lifecycle_stage=active"]
    assert {"candidate", "logged"} <= set(report.estimates)
    with Session(engine) as s:
        version = s.exec(select(PolicyVersion)).one()
    assert version.status == "candidate" and version.n_updates == report.trained_on


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (",0.25,", ",1.5,", "field 'propensity': 1.5 is not in (0, 1]"),
        (
            "crosssell/bogo",
            "crosssell/ghost",
            "field 'action': 'crosssell/ghost' is not a campaign/treatment of the plan",
        ),
        (",0.25,", ",abc,", "field 'propensity': 'abc' is not a number"),
    ],
)
def test_bad_rows_name_the_line_and_write_nothing(
    engine: sa.Engine, tmp_path: Path, snapshot, old: str, new: str, message: str
) -> None:
    admin.apply_plan_file(engine, PLAN, actor="t")
    logs = tmp_path / "logs.csv"
    _write_logs(logs)
    lines = logs.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if old in line and i > 3)
    lines[target] = lines[target].replace(old, new, 1)
    logs.write_text("\n".join(lines) + "\n")
    before = snapshot(engine)
    with pytest.raises(ImportFileError) as exc:
        import_logs(engine, logs, actor="ana")
    assert f"line {target + 1}" in str(exc.value) and message in str(exc.value)
    assert snapshot(engine) == before
