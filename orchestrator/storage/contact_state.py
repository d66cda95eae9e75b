"""The contact-state table: read with the customers, written with the decisions, rebuilt from
the decision log whenever it may be incomplete.

The states are complete through a run date (``contact_state_mark.through``). A run may read them
("state" mode) when they are complete through the last run before it and keep enough days;
otherwise it reads the decision log and rewrites every state of its batches ("rebuild" mode),
which makes them complete again. Anything that changes past decisions outside a run (a forced
rerun that clears a date with later decisions, imported decisions) calls ``invalidate``; a
forced rerun of the latest date needs no rebuild, since it rewrites every state that holds an
entry of that date.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.storage.bulk import bulk_insert, driver_connection, is_postgres_conn
from orchestrator.storage.models import ContactStateMark, Run, utcnow

STATE_MIN_DAYS = 90  # states keep at least this many days, so most plan changes need no rebuild


def horizon_for(lookback_days: int) -> int:
    return max(lookback_days, STATE_MIN_DAYS)


def mode_for(session: Session, day: date, lookback_days: int) -> str:
    """``"state"`` if the states are complete for a run of ``day``, else ``"rebuild"``."""
    mark = session.get(ContactStateMark, 1)
    if mark is None or mark.through is None or mark.horizon_days < lookback_days:
        return "rebuild"
    last = session.exec(
        select(sa.func.max(Run.run_date)).where(col(Run.status) == "done", col(Run.run_date) < day)
    ).one()
    return "state" if last is None or last <= mark.through else "rebuild"


def mark_complete(conn: sa.Connection, day: date, horizon: int) -> None:
    """The states are complete through the run of ``day`` (its last partition is written)."""
    table = ContactStateMark.__table__  # type: ignore[attr-defined]
    conn.execute(sa.delete(table))
    conn.execute(
        sa.insert(table).values(id=1, through=day, horizon_days=horizon, updated_at=utcnow())
    )


def invalidate(conn: sa.Connection) -> None:
    """Past decisions changed outside a run: the next run rebuilds the states."""
    table = ContactStateMark.__table__  # type: ignore[attr-defined]
    conn.execute(sa.update(table).values(through=None, updated_at=utcnow()))


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
    collate = ' COLLATE "C"' if pg else ""
    if replace_range is not None:
        after, last = replace_range
        where = f"customer_id{collate} <= :last"
        params = {"last": last}
        if after is not None:
            where += f" AND customer_id{collate} > :after"
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
