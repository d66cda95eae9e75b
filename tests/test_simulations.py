"""Every script in simulations/ runs here on a tiny scenario (its flaws would show)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from orchestrator.storage.db import make_engine
from simulations.replay import replay


def test_replay_runs_the_whole_loop(db_url: str) -> None:
    result = replay(db_url, customers=400, days=6, seed=3, policy="lints")
    assert result.days == 6 and result.decisions > 0 and result.events > 0
    assert result.policy_versions >= 1
    assert {row["campaign"] for row in result.uplift} <= {"winback", "loyalty"}
    engine = make_engine(db_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT COUNT(*) FROM run WHERE status = 'done'")).scalar()
        rewards = conn.execute(sa.text("SELECT COUNT(*) FROM reward")).scalar()
    engine.dispose()
    assert runs == 6 and rewards > 0


def test_replay_is_deterministic(tmp_path: Path) -> None:
    first = replay(f"sqlite:///{tmp_path / 'a.db'}", customers=300, days=5, seed=11)
    second = replay(f"sqlite:///{tmp_path / 'b.db'}", customers=300, days=5, seed=11)
    other = replay(f"sqlite:///{tmp_path / 'c.db'}", customers=300, days=5, seed=12)
    # repr: intervals of rows too small to measure are NaN, and NaN != NaN
    assert repr((first.decisions, first.events, first.uplift)) == repr(
        (second.decisions, second.events, second.uplift)
    )
    assert (other.decisions, other.events) != (first.decisions, first.events)
