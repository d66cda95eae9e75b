"""`orch run`, `orch learn`, `orch evaluate`, `orch policy`, `orch logs` through the entry point."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, select

from orchestrator.storage.db import make_engine
from orchestrator.storage.models import Decision, Event
from tests.helpers import seed_customers
from tests.test_cli import orch

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"


def test_the_learning_loop_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    assert orch(db_url, "init").returncode == 0
    assert orch(db_url, "plan", "apply", str(PLAN)).returncode == 0
    engine = make_engine(db_url)
    seed_customers(engine, 300)
    for day in range(1, 4):
        result = orch(db_url, "run", "--date", f"2026-11-0{day}", "--batch-size", "100")
        assert result.returncode == 0, result.stderr
        assert "Decisions" in result.stdout
    with Session(engine) as s:
        s.add_all(
            Event(
                source_event_id=f"e{i}",
                customer_id=d.customer_id,
                type="purchase",
                amount=20.0,
                occurred_at=datetime.combine(d.run_date, datetime.min.time()) + timedelta(hours=12),
            )
            for i, d in enumerate(s.exec(select(Decision)))
        )
        s.commit()
    engine.dispose()
    learned = orch(db_url, "learn", "--as-of", "2026-12-15", "--json")
    assert learned.returncode == 0, learned.stderr
    report = json.loads(learned.stdout)
    assert report["maturation"]["matured"] > 0 and report["candidate_id"] is not None
    versions = json.loads(orch(db_url, "policy", "list", "--json").stdout)
    assert versions[0]["kind"] == "uniform"
    evaluated = orch(db_url, "evaluate")
    assert evaluated.returncode == 0 and "static_ranking" in evaluated.stdout
    rollback = orch(db_url, "policy", "rollback")
    assert rollback.returncode == 2 and len(rollback.stderr.strip().splitlines()) == 1
    bad = tmp_path / "logs.csv"
    bad.write_text("action,propensity,reward\ncrosssell/pct10,2,1.0\n")
    imported = orch(db_url, "logs", "import", str(bad))
    assert imported.returncode == 2
    assert f"{bad} line 2, field 'propensity': 2.0 is not in (0, 1]" in imported.stderr
    explained = orch(db_url, "explain", "C000001", "--date", "2026-11-03")
    assert explained.returncode == 0 and "global control" in explained.stdout
    assert date(2026, 11, 3).isoformat() in explained.stdout
    unknown_date = orch(db_url, "run", "--date", "2026-13-01")
    assert unknown_date.returncode == 2
    assert "--date: '2026-13-01' is not a date" in unknown_date.stderr
