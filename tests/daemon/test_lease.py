"""The leader lease: one holder at a time on both backends, renewal, takeover after expiry,
release on a clean stop."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import sqlalchemy as sa

from orchestrator.daemon.lease import LeaderLease, read_lease
from orchestrator.storage.db import make_engine


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 6, 0, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_one_holder_renewal_and_takeover_after_expiry(engine: sa.Engine) -> None:
    clock = Clock()
    a = LeaderLease(engine, ttl=30, holder="host-a:1:x", clock=clock, info={"at": "06:00"})
    b = LeaderLease(engine, ttl=30, holder="host-b:2:y", clock=clock)
    assert a.try_acquire() and not b.try_acquire()
    assert a.is_leader() and not b.is_leader()
    clock.advance(20)
    assert a.try_acquire() and not b.try_acquire()  # renewed: 30 s from now
    clock.advance(25)
    assert not b.try_acquire()  # 45 s since a took it, but only 25 since it renewed
    with engine.connect() as conn:
        held = read_lease(conn)
    assert held is not None and held.holder == "host-a:1:x" and held.info == {"at": "06:00"}
    assert held.host == "host-a" and held.pid == 1 and held.live(clock.now)
    assert held.acquired_at == datetime(2026, 12, 1, 6, 0, 0)  # renewals keep the start
    clock.advance(6)  # a stopped renewing (SIGKILL) 31 s ago: the lease has run out
    assert not a.is_leader()
    assert b.try_acquire() and b.is_leader()
    assert not a.try_acquire() and not a.is_leader()  # a, back from a pause, is a standby now


def test_release_lets_a_standby_take_over_at_once(engine: sa.Engine) -> None:
    clock = Clock()
    a = LeaderLease(engine, ttl=30, holder="a", clock=clock)
    b = LeaderLease(engine, ttl=30, holder="b", clock=clock)
    assert a.try_acquire()
    a.release()
    assert not a.is_leader()
    assert b.try_acquire()
    with engine.connect() as conn:
        assert read_lease(conn).holder == "b"  # type: ignore[union-attr]


def test_concurrent_daemons_elect_exactly_one(db_url: str, engine: sa.Engine) -> None:
    """Eight daemons, each with its own connection pool, try at the same instant, twice."""
    engines = [make_engine(db_url) for _ in range(8)]
    leases = [LeaderLease(e, ttl=30, holder=f"d{i}") for i, e in enumerate(engines)]
    for _ in range(2):
        start = threading.Barrier(len(leases))
        won: list[bool] = [False] * len(leases)

        def attempt(i: int, start: threading.Barrier, won: list[bool]) -> None:
            start.wait()
            won[i] = leases[i].try_acquire()

        threads = [
            threading.Thread(target=attempt, args=(i, start, won)) for i in range(len(leases))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(won) == 1
    for e in engines:
        e.dispose()
