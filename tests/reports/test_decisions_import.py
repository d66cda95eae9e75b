"""`orch decisions import`: past experiments in, same reports out; bad lines stop everything."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.decisions_import import import_decisions
from orchestrator.errors import ImportFileError, InputError
from orchestrator.reports.uplift import uplift_report
from orchestrator.storage.models import Decision, Event
from tests.reports.builders import PLAN

TODAY = date(2026, 6, 1)
HEADER = "customer_id,campaign_id,treatment_id,group,decision_date"


@pytest.fixture
def ready(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, PLAN, actor="test")
    return engine


def _write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _decisions(engine: sa.Engine) -> list[Decision]:
    with Session(engine) as s:
        return list(s.exec(select(Decision).order_by(Decision.customer_id)))


def test_import_then_measure_an_old_ab_test(ready: sa.Engine, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    groups = np.where(rng.random(n) < 0.25, "control", "test")
    day = date(2025, 11, 3)
    lines = [f"H{i},oldtest,promo,{g},{day}" for i, g in enumerate(groups)]
    path = _write(tmp_path / "old.csv", lines)
    with pytest.raises(ImportFileError, match="'oldtest' is not a campaign of the plan"):
        import_decisions(ready, path, today=TODAY)
    with pytest.raises(ImportFileError, match="window_end.*is needed for campaign 'oldtest'"):
        import_decisions(ready, path, today=TODAY, new_campaigns=True)
    report = import_decisions(ready, path, today=TODAY, new_campaigns=True, measurement_days=10)
    assert report.inserted == n and report.new_campaigns == ["oldtest"]
    again = import_decisions(ready, path, today=TODAY, new_campaigns=True, measurement_days=10)
    assert again.inserted == 0 and again.unchanged_or_duplicate == n
    rows = _decisions(ready)
    assert len(rows) == n
    share = (groups == "test").mean()
    for d in rows:
        assert d.reason == "import" and d.window_end == day + timedelta(days=10)
        expected = share if d.group == "test" else 1 - share
        assert d.split_share == pytest.approx(expected)
        assert d.propensity == pytest.approx(expected)  # one treatment: P(treatment) = 1
    # Outcomes: test customers spend 30 more on the second day of the window.
    events = []
    for i, g in enumerate(groups):
        spend = (10.0 if rng.random() < 0.5 else 0.0) + (30.0 if g == "test" else 0.0)
        if spend:
            at = datetime.combine(day + timedelta(days=1), datetime.min.time())
            events.append(
                Event(
                    source_event_id=f"h{i}",
                    customer_id=f"H{i}",
                    occurred_at=at,
                    type="purchase",
                    amount=spend,
                )
            )
    with Session(ready) as s:
        s.add_all(events)
        s.commit()
    measured = uplift_report(ready, as_of=TODAY, campaign="oldtest")
    row = measured.rows[0]
    assert (row.n_test, row.n_control) == ((groups == "test").sum(), (groups == "control").sum())
    assert row.uplift_low < 30 < row.uplift_high and row.verdict == "gain"


def test_known_campaign_takes_the_plan_window_channel_and_given_propensity(
    ready: sa.Engine, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "w.csv",
        ["A1,welcome,pct10,test,2026-01-05,0.4", "A2,welcome,guide,CONTROL,2026-01-05,0.1"],
        header=HEADER + ",propensity",
    )
    assert import_decisions(ready, path, today=TODAY).inserted == 2
    a1, a2 = _decisions(ready)
    assert a1.window_end == date(2026, 1, 12) and a1.channel == "email"
    assert (a1.propensity, a2.propensity, a2.group) == (0.4, 0.1, "control")


def test_parquet_with_window_end_and_measurement_days(ready: sa.Engine, tmp_path: Path) -> None:
    table = pa.table(
        {
            "customer_id": ["P1", "P2"],
            "campaign_id": ["winback", "winback"],
            "treatment_id": ["win15", "win15"],
            "group": ["test", "control"],
            "decision_date": pa.array([date(2026, 2, 1), date(2026, 2, 2)], pa.date32()),
            "window_end": pa.array([date(2026, 2, 20), None], pa.date32()),
            "measurement_days": [None, 3],
        }
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    assert import_decisions(ready, path, today=TODAY).inserted == 2
    p1, p2 = _decisions(ready)
    assert p1.window_end == date(2026, 2, 20) and p2.window_end == date(2026, 2, 5)


BAD = [
    (
        "C1,welcome,pct10,test,2026-01-05\nC2,welcome,pct10,maybe,2026-01-05",
        3,
        "group",
        "'maybe' is not test or control",
    ),
    ("C1,welcome,pct10,test,2026-13-05", 2, "decision_date", "'2026-13-05' is not a date"),
    ("C1,welcome,nope,test,2026-01-05", 2, "treatment_id", "campaign 'welcome' has no treatment"),
    ("C1,welcome,pct10,test,2027-01-05", 2, "decision_date", "is after today (2026-06-01)"),
    (",welcome,pct10,test,2026-01-05", 2, "customer_id", "is empty"),
    (
        "C1,welcome,pct10,test,2026-01-05\nC1,winback,win15,test,2026-01-05",
        3,
        "customer_id",
        "'C1' already has a decision on 2026-01-05 at line 2",
    ),
]


@pytest.mark.parametrize(("body", "line", "field", "message"), BAD)
def test_bad_line_names_file_line_and_field_and_writes_nothing(
    ready: sa.Engine, tmp_path: Path, snapshot, body: str, line: int, field: str, message: str
) -> None:
    path = _write(tmp_path / "bad.csv", body.split("\n"))
    before = snapshot(ready)
    with pytest.raises(ImportFileError) as exc:
        import_decisions(ready, path, today=TODAY)
    text = str(exc.value)
    assert text.startswith(f"{path} line {line}, field {field!r}: ")
    assert message in text and "\n" not in text
    assert snapshot(ready) == before


def test_conflict_with_the_database_and_skip_invalid(ready: sa.Engine, tmp_path: Path) -> None:
    _write(tmp_path / "first.csv", ["C1,welcome,pct10,test,2026-01-05"])
    import_decisions(ready, tmp_path / "first.csv", today=TODAY)
    path = _write(
        tmp_path / "second.csv",
        [
            "C1,winback,win15,test,2026-01-05",  # contradicts the decision imported before
            "C1,welcome,pct10,test,2026-01-05",  # repeats it: skipped
            "C2,welcome,pct10,test,2026-01-06",
            "C3,welcome,pct10,tset,2026-01-06",
        ],
    )
    with pytest.raises(ImportFileError, match="line 2, field 'customer_id'.*different decision"):
        import_decisions(ready, path, today=TODAY)
    report = import_decisions(ready, path, today=TODAY, skip_invalid=True)
    assert (report.inserted, report.unchanged_or_duplicate, report.rejected) == (1, 1, 2)
    rejects = Path(report.rejects_path or "").read_text()
    assert "different decision" in rejects and "'tset' is not test or control" in rejects
    assert [d.customer_id for d in _decisions(ready)] == ["C1", "C2"]


def test_file_level_problems(ready: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="missing required column 'group'"):
        import_decisions(
            ready,
            _write(
                tmp_path / "a.csv",
                ["C1,welcome,pct10,2026-01-05"],
                header="customer_id,campaign_id,treatment_id,decision_date",
            ),
            today=TODAY,
        )
    with pytest.raises(ImportFileError, match="unknown column 'colour'"):
        import_decisions(
            ready,
            _write(
                tmp_path / "b.csv",
                ["C1,welcome,pct10,test,2026-01-05,red"],
                header=HEADER + ",colour",
            ),
            today=TODAY,
        )
    with pytest.raises(ImportFileError, match="file not found"):
        import_decisions(ready, tmp_path / "none.csv", today=TODAY)
    with pytest.raises(InputError, match="--measurement-days"):
        import_decisions(ready, tmp_path / "none.csv", today=TODAY, measurement_days=0)
