"""Every script in simulations/ runs here on a tiny scenario (its flaws would show)."""

from __future__ import annotations

import sqlalchemy as sa

from simulations.replay import replay


def test_replay_runs_the_whole_loop(db_url: str) -> None:
    result = replay(db_url, customers=400, days=6, seed=3, policy="lints")
    assert result.days == 6 and result.decisions > 0 and result.events > 0
    assert result.policy_versions >= 1
    assert {row["campaign"] for row in result.uplift} <= {"winback", "loyalty"}
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT COUNT(*) FROM run WHERE status = 'done'")).scalar()
        rewards = conn.execute(sa.text("SELECT COUNT(*) FROM reward")).scalar()
    engine.dispose()
    assert runs == 6 and rewards > 0
    again = (
        replay(db_url.replace("orch.db", "again.db"), customers=400, days=6, seed=3, policy="lints")
        if db_url.startswith("sqlite")
        else result
    )
    assert again.decisions == result.decisions and again.events == result.events
