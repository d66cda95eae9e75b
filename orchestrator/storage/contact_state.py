"""The contact-state table: read with the customers, written with the decisions, rebuilt from
the decision log whenever it may be incomplete.

``contact_state_mark`` says the states hold every decision up to ``through`` (and
``horizon_days`` back), as of ``generation``. A run reads the states ("state" mode) only when
they are complete for its date: a mark exists, reaches far enough back, and no other run lies
between ``through`` and the date. Otherwise it reads the decision log and rewrites every state of
its batches ("rebuild" mode), which makes them complete again. The run completes the mark only if
the generation did not move meanwhile and no decision is dated after its date.

- Anything that changes past decisions outside a run (imported decisions; a run of a date
  that has later decisions, forced or a backfill) calls ``invalidate``: the generation moves,
  ``through`` is cleared, and every later run rebuilds until one completes.
- A forced rerun of the latest date lowers ``through`` to the day before (``reopen``): the
  rerun reads the states and rewrites every state holding an entry of that date; if it dies,
  its unfinished run row lies between ``through`` and any later date, so those rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.storage.bulk import bulk_insert, collate, driver_connection, is_postgres_conn
from orchestrator.storage.models import ContactStateMark, Decision, Run, utcnow

STATE_MIN_DAYS = 90  # states keep at least this many days, so most plan changes need no rebuild
_TABLE = ContactStateMark.__table__  # type: ignore[attr-defined]


def horizon_for(lookback_days: int) -> int:
    return max(lookback_days, STATE_MIN_DAYS)


@dataclass(frozen=True)
class Mark:
    through: date | None
    horizon_days: int
    generation: int


def read_mark(conn: sa.Connection) -> Mark:
    row = conn.execute(
        sa.select(_TABLE.c.through, _TABLE.c.horizon_days, _TABLE.c.generation).where(
            _TABLE.c.id == 1
        )
    ).first()
    return Mark(row[0], row[1], row[2]) if row else Mark(None, 0, 0)


def _ensure(conn: sa.Connection) -> None:
    if conn.execute(sa.select(_TABLE.c.id).where(_TABLE.c.id == 1)).first() is None:
        conn.execute(
            sa.insert(_TABLE).values(
                id=1, through=None, horizon_days=0, generation=0, updated_at=utcnow()
            )
        )


def decisions_after(conn: sa.Connection, day: date) -> bool:
    return (
        conn.execute(
            sa.select(col(Decision.id)).where(col(Decision.run_date) > day).limit(1)
        ).first()
        is not None
    )


def prepare_run(session: Session, day: date, lookback_days: int) -> tuple[str, int]:
    """How a new run of ``day`` reads contact history (``"state"`` or ``"rebuild"``) and the
    generation it started from; moves the mark first when the run rewrites the past."""
    conn = session.connection()
    _ensure(conn)
    mark = read_mark(conn)
    if decisions_after(conn, day):  # a backfill, or a forced rerun of an older date
        invalidate(conn)
    elif mark.through is not None and day <= mark.through:  # a rerun of the latest date
        conn.execute(sa.update(_TABLE).values(through=day - timedelta(days=1), updated_at=utcnow()))
    return mode_for(session, day, lookback_days), read_mark(conn).generation


def mode_for(session: Session, day: date, lookback_days: int) -> str:
    """``"state"`` if the stored states are complete for a run of ``day`` (read only)."""
    mark = read_mark(session.connection())
    if mark.through is None or mark.horizon_days < lookback_days:
        return "rebuild"
    between = session.exec(
        select(sa.func.count())
        .select_from(Run)
        .where(col(Run.run_date) > mark.through, col(Run.run_date) < day)
    ).one()
    return "rebuild" if between else "state"


def mark_complete(conn: sa.Connection, day: date, horizon: int, generation: int) -> bool:
    """The run of ``day`` wrote every state: complete the mark, unless the generation moved
    (something changed the past meanwhile) or decisions are dated after ``day``."""
    if decisions_after(conn, day):
        return False
    done = conn.execute(
        sa.update(_TABLE)
        .where(_TABLE.c.id == 1, _TABLE.c.generation == generation)
        .values(through=day, horizon_days=horizon, updated_at=utcnow())
    )
    return bool(done.rowcount)


def generation(conn: sa.Connection) -> int:
    return read_mark(conn).generation


def invalidate(conn: sa.Connection) -> None:
    """Past decisions changed outside a run: the next runs rebuild the states."""
    _ensure(conn)
    conn.execute(
        sa.update(_TABLE)
        .where(_TABLE.c.id == 1)
        .values(through=None, generation=_TABLE.c.generation + 1, updated_at=utcnow())
    )


def write_states(
    conn: sa.Connection,
    ids: Sequence[str],
    states: Sequence[bytes | None],
    *,
    replace_range: tuple[str | None, str] | None = None,
) -> None:
    """Store the ``states`` of customers ``ids`` (None: no state). With ``replace_range``
    ``(after, last)`` every state in that id range is replaced (rebuild); otherwise the given
    customers' states are upserted."""
    rows = [(cid, s) for cid, s in zip(ids, states, strict=True) if s is not None]
    pg = is_postgres_conn(conn)
    order = collate(conn)
    if replace_range is not None:
        after, last = replace_range
        where = f"customer_id{order} <= :last"
        params = {"last": last}
        if after is not None:
            where += f" AND customer_id{order} > :after"
            params["after"] = after
        conn.execute(sa.text(f"DELETE FROM contact_state WHERE {where}"), params)
        bulk_insert(conn, "contact_state", ("customer_id", "state"), rows)
        return
    if not rows:
        return
    if pg:
        cur = driver_connection(conn).cursor()
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS contact_state_stage "
            "(customer_id text, state bytea) ON COMMIT DELETE ROWS"
        )
        with cur.copy("COPY contact_state_stage (customer_id, state) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO contact_state (customer_id, state) "
            "SELECT customer_id, state FROM contact_state_stage "
            "ON CONFLICT (customer_id) DO UPDATE SET state = EXCLUDED.state"
        )
        cur.execute("DELETE FROM contact_state_stage")
        return
    cur = driver_connection(conn).cursor()
    cur.executemany(
        "INSERT INTO contact_state (customer_id, state) VALUES (?, ?) "
        "ON CONFLICT (customer_id) DO UPDATE SET state = excluded.state",
        rows,
    )
