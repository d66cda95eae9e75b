"""A decision belongs to the segment its targeting saw, not to a refresh made after its day.

The closed loop refreshes segments as of the end of yesterday, runs, then the day's purchases
arrive and the next morning's refresh moves customers. A winback that targets only at-risk and
lapsed customers must show only those segments in `report uplift --by lifecycle`.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from orchestrator.reports.data import day_number, segment_history_values
from orchestrator.reports.uplift import uplift_report
from orchestrator.storage.db import make_engine
from simulations.loop import simulate
from simulations.scenario import load_scenario

TARGETED = {"at_risk", "lapsed"}  # tiny's winback: lifecycle_stage in ["at_risk", "lapsed"]


def test_winback_decisions_are_labelled_with_the_segment_their_targeting_saw(
    tmp_path: Path,
) -> None:
    days = 14
    simulate("tiny", ["uniform"], customers=1500, days=days, seed=5, out_dir=tmp_path, workers=1)
    engine = make_engine(f"sqlite:///{tmp_path / 'uniform.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT customer_id, run_date FROM decision WHERE campaign_id = 'winback'")
            ).all()
            assert len(rows) > 20
            ids = sorted({r[0] for r in rows})
            index = {c: i for i, c in enumerate(ids)}
            customer = np.array([index[r[0]] for r in rows], np.int64)
            day = np.array([day_number(date.fromisoformat(str(r[1])[:10])) for r in rows], np.int64)
            seen = segment_history_values(conn, pa.array(ids), "lifecycle", customer, day)
            assert seen is not None
            assert set(seen.to_pylist()) <= TARGETED
            # The refresh after each day's purchases did move some of them (else no test).
            after = segment_history_values(conn, pa.array(ids), "lifecycle", customer, day + 1)
            assert after is not None
            moved = {v for v in after.to_pylist() if v not in TARGETED}
            assert moved, "no winback customer changed segment the next day: the test shows nothing"
        start = load_scenario("tiny").start
        report = uplift_report(
            engine, as_of=start + timedelta(days=days + 20), campaign="winback", by=["lifecycle"]
        )
        labels = {r.segment["lifecycle"] for r in report.rows}
        assert labels and labels <= TARGETED
    finally:
        engine.dispose()
