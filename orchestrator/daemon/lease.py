"""One leader among the daemons on one database: a lease row with a heartbeat.

Every daemon tries, every ``ttl / 3`` seconds, to take or renew the ``leader`` lease with one
conditional UPDATE (it succeeds when the daemon already holds the lease or when the lease has
expired), so at most one daemon holds it at any time on SQLite and PostgreSQL alike. The holder
renews it well before it expires; a daemon that dies, SIGKILL included, stops renewing, and a
standby takes over once ``expires_at`` has passed: within ``ttl`` plus one renewal interval.
A daemon that stops cleanly releases the lease, so a standby takes over at its next try.

Expiry times are written by the daemons' own clocks, so the hosts' clocks must agree to well
within ``ttl`` (NTP does that).

>>> from orchestrator.storage.db import make_engine, init_schema
>>> engine = make_engine("sqlite://")
>>> _ = init_schema(engine)
>>> a, b = LeaderLease(engine, ttl=30, holder="a"), LeaderLease(engine, ttl=30, holder="b")
>>> a.try_acquire(), b.try_acquire()
(True, False)
>>> a.release(); b.try_acquire()
True
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orchestrator.storage.models import Lease, utcnow

LEADER = "leader"


def holder_id() -> str:
    """``host:pid:nonce``: unique per process, readable by an operator."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a lease, as read from the database."""

    holder: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    info: dict[str, Any]

    @property
    def host(self) -> str:
        return self.holder.split(":")[0]

    @property
    def pid(self) -> int | None:
        parts = self.holder.split(":")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def live(self, now: datetime) -> bool:
        return bool(self.holder) and self.expires_at > now


class LeaderLease:
    """This process's hold on a named lease (``ttl`` seconds from each renewal)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        ttl: float,
        name: str = LEADER,
        holder: str | None = None,
        info: dict[str, Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be > 0 seconds, got {ttl}")
        self.engine, self.ttl, self.name = engine, float(ttl), name
        self.holder = holder or holder_id()
        self.info = json.dumps(info or {}, sort_keys=True)
        self.clock = clock
        self._held_until: datetime | None = None

    @property
    def renew_every(self) -> float:
        """Seconds between two tries: three tries before the lease runs out."""
        return self.ttl / 3.0

    def is_leader(self) -> bool:
        """Whether this process held the lease at its last try, and it has not run out."""
        return self._held_until is not None and self.clock() < self._held_until

    def try_acquire(self) -> bool:
        """Take or renew the lease; return whether this process holds it now."""
        now = self.clock()
        until = now + timedelta(seconds=self.ttl)
        table = Lease.__table__  # type: ignore[attr-defined]
        mine = table.c.holder == self.holder
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.update(table)
                .where(table.c.name == self.name, sa.or_(mine, table.c.expires_at <= now))
                .values(
                    holder=self.holder,
                    acquired_at=sa.case((mine, table.c.acquired_at), else_=now),
                    renewed_at=now,
                    expires_at=until,
                    info=self.info,
                )
            ).rowcount
            exists = (
                taken
                or conn.execute(sa.select(table.c.name).where(table.c.name == self.name)).first()
            )
        if not exists:  # the first daemon on this database: one of the inserts wins
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(table).values(
                            name=self.name,
                            holder=self.holder,
                            acquired_at=now,
                            renewed_at=now,
                            expires_at=until,
                            info=self.info,
                        )
                    )
                taken = 1
            except sa.exc.IntegrityError:
                taken = 0
        self._held_until = until if taken else None
        return bool(taken)

    def release(self) -> None:
        """Give the lease up (a clean stop): a standby can take it at once."""
        self._held_until = None
        table = Lease.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.name == self.name, table.c.holder == self.holder)
                .values(expires_at=self.clock(), holder="")
            )


def read_lease(conn: sa.Connection, name: str = LEADER) -> LeaseInfo | None:
    """The lease as stored (None when no daemon ever took it)."""
    table = Lease.__table__  # type: ignore[attr-defined]
    row = conn.execute(sa.select(table).where(table.c.name == name)).first()
    if row is None:
        return None
    try:
        info = json.loads(row.info or "{}")
    except ValueError:
        info = {}
    return LeaseInfo(row.holder, row.acquired_at, row.renewed_at, row.expires_at, info)
