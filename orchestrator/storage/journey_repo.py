"""Journey states and entry/exit events of a batch, and writing the states back.

``journey_state`` holds one row per customer and journey they ever entered. The run reads the
rows of a batch's id range with the batch's entry and exit events (one grouped query on the
event table's (customer, time) index), and writes the rows that changed in the same transaction
as the decisions, each with the state it had before (``before``), so a forced rerun of the latest
date can put the states back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from orchestrator.engine.journeys import (
    CONTROL,
    STATUS,
    STATUS_CODE,
    TEST,
    JourneyInput,
    JourneyPlan,
    JourneyState,
)
from orchestrator.errors import InputError
from orchestrator.storage.bulk import collate

GROUP_NAME = {TEST: "test", CONTROL: "control", 0: "test"}
GROUP_CODE = {"test": TEST, "control": CONTROL}


def _ordinal(value: Any) -> int:
    if value is None:
        return -1
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = value.date()
    return int(value.toordinal())


def load_journey_input(
    conn: sa.Connection,
    ids: Sequence[str],
    plans: tuple[JourneyPlan, ...],
    day: date,
    *,
    before_run: bool = False,
) -> JourneyInput | None:
    """The journey states of customers ``ids`` (sorted) and their last entry and exit events
    before ``day``; None when the plan has no live journey. ``before_run``: a run of ``day``
    already moved the states (explain): take what they were before it."""
    if not plans or not ids:
        return None
    n = len(ids)
    row_of = {cid: i for i, cid in enumerate(ids)}
    order = collate(conn)
    where = f"customer_id{order} >= :lo AND customer_id{order} <= :hi"
    bounds = {"lo": ids[0], "hi": ids[-1]}
    states = [JourneyState.empty(n) for _ in plans]
    index = {jp.id: j for j, jp in enumerate(plans)}
    rows = conn.execute(
        sa.text(
            "SELECT customer_id, journey_id, status, entered_on, step, grp, entries, "
            f"changed_on, before FROM journey_state WHERE {where}"
        ),
        bounds,
    ).all()
    for cid, jid, status, entered, step, grp, entries, changed, prior in rows:
        i, j = row_of.get(cid), index.get(jid)
        if i is None or j is None:
            continue
        if before_run and _ordinal(changed) >= day.toordinal():
            if prior is None:
                continue  # entered on that run: not in the journey before it
            prior = orjson.loads(prior) if isinstance(prior, str) else prior
            status, entered, step = prior["status"], prior["entered_on"], prior["step"]
            grp, entries = prior["grp"], prior["entries"]
        st = states[j]
        st.status[i] = STATUS_CODE.get(status, 0)
        st.entered[i] = _ordinal(entered)
        st.step[i] = step
        st.group[i] = GROUP_CODE.get(grp, TEST)
        st.entries[i] = entries
    # The last entry and exit event of each customer, far enough back for every journey.
    span = max(
        max(jp.spec.entry_within_days, int(jp.step_days[-1]) + jp.spec.defer_days + 1)
        for jp in plans
    )
    since = datetime.combine(day - timedelta(days=span), datetime.min.time())
    until = datetime.combine(day, datetime.min.time())
    types = sorted(
        {t.event for jp in plans for t in (jp.spec.entry, jp.spec.exit) if t and t.event}
    )
    last: dict[str, np.ndarray] = {t: np.full(n, -1, dtype=np.int64) for t in types}
    if types:
        marks = ", ".join(f":t{k}" for k in range(len(types)))
        events = conn.execute(
            sa.text(
                "SELECT customer_id, type, MAX(occurred_at) FROM event "
                f"WHERE {where} AND occurred_at >= :since AND occurred_at < :until "
                f"AND type IN ({marks}) GROUP BY customer_id, type"
            ),
            {**bounds, "since": since, "until": until, **{f"t{k}": t for k, t in enumerate(types)}},
        ).all()
        for cid, kind, when in events:
            i = row_of.get(cid)
            if i is not None:
                last[kind][i] = _ordinal(when)
    none = np.full(n, -1, dtype=np.int64)
    return JourneyInput(
        states=states,
        entry_event=[
            last.get(jp.spec.entry.event, none) if jp.spec.entry.event else none for jp in plans
        ],
        exit_event=[
            last.get(jp.spec.exit.event, none) if jp.spec.exit and jp.spec.exit.event else none
            for jp in plans
        ],
    )


def _state_json(st: JourneyState, i: int) -> dict[str, Any]:
    entered = int(st.entered[i])
    return {
        "status": STATUS[int(st.status[i])],
        "entered_on": date.fromordinal(entered).isoformat() if entered > 0 else None,
        "step": int(st.step[i]),
        "grp": GROUP_NAME[int(st.group[i])],
        "entries": int(st.entries[i]),
    }


def write_journey_states(
    conn: sa.Connection,
    ids: Sequence[str],
    plans: tuple[JourneyPlan, ...],
    before: list[JourneyState],
    after: list[JourneyState],
    day: date,
) -> int:
    """Store the journey states that changed today (with what they were); how many."""
    rows = []
    for jp, old, new in zip(plans, before, after, strict=True):
        for i in np.flatnonzero(new.changed(old)).tolist():
            prior = _state_json(old, i) if old.status[i] != 0 else None
            rows.append(
                {
                    "customer_id": ids[i],
                    "journey_id": jp.id,
                    **_state_json(new, i),
                    "changed_on": day,
                    "before": orjson.dumps(prior).decode() if prior else None,
                }
            )
    if not rows:
        return 0
    cast = "CAST(:before AS JSONB)" if conn.dialect.name == "postgresql" else ":before"
    conn.execute(
        sa.text(
            "INSERT INTO journey_state (customer_id, journey_id, status, entered_on, step, grp, "
            f"entries, changed_on, before) VALUES (:customer_id, :journey_id, :status, "
            f":entered_on, :step, :grp, :entries, :changed_on, {cast}) "
            "ON CONFLICT (customer_id, journey_id) DO UPDATE SET status = excluded.status, "
            "entered_on = excluded.entered_on, step = excluded.step, grp = excluded.grp, "
            "entries = excluded.entries, changed_on = excluded.changed_on, "
            "before = CASE WHEN journey_state.changed_on = excluded.changed_on "
            "THEN journey_state.before ELSE excluded.before END"
        ),
        rows,
    )
    return len(rows)


def rewind_journey_states(conn: sa.Connection, day: date) -> None:
    """Put back the journey states a run of ``day`` changed (a forced rerun clears it first);
    refuse if states changed after ``day`` (they cannot be rewound that far)."""
    later = conn.execute(
        sa.text("SELECT COUNT(*) FROM journey_state WHERE changed_on > :day"), {"day": day}
    ).scalar_one()
    if later:
        raise InputError(
            f"{later} journey states changed after {day}: a journey cannot be rewound past "
            "the latest run; rerun only the latest date"
        )
    rows = conn.execute(
        sa.text(
            "SELECT customer_id, journey_id, before FROM journey_state WHERE changed_on = :day"
        ),
        {"day": day},
    ).all()
    for cid, jid, prior in rows:
        key = {"cid": cid, "jid": jid}
        if prior is None:
            conn.execute(
                sa.text("DELETE FROM journey_state WHERE customer_id = :cid AND journey_id = :jid"),
                key,
            )
            continue
        prior = orjson.loads(prior) if isinstance(prior, str) else prior
        conn.execute(
            sa.text(
                "UPDATE journey_state SET status = :status, entered_on = :entered_on, "
                "step = :step, grp = :grp, entries = :entries, changed_on = :changed_on, "
                "before = NULL WHERE customer_id = :cid AND journey_id = :jid"
            ),
            {
                **key,
                **prior,
                "entered_on": date.fromisoformat(prior["entered_on"])
                if prior["entered_on"]
                else None,
                "changed_on": day - timedelta(days=1),
            },
        )
