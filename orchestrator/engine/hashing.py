"""Deterministic, keyed uniform draws: test/control assignment and the run's random choices.

A customer's draw for a campaign depends only on (customer id, campaign id, salt), so reruns
reproduce it and a campaign's control group is sticky. The customer id is hashed once per batch
(blake2b); campaigns are mixed in with splitmix64, vectorized. The policy's random choices use
``Draws``, keyed on (run seed, run date, customer), so they do not depend on batch or partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def customer_keys(customer_ids: Sequence[str], salt: str) -> np.ndarray:
    """64-bit keys of the customers, ``(n,)`` uint64.

    >>> bool(customer_keys(["C1"], "s")[0] == customer_keys(["C1"], "s")[0])
    True
    """
    prefix = salt.encode() + b"\x00"
    digest = hashlib.blake2b
    out = np.fromiter(
        (
            int.from_bytes(digest(prefix + cid.encode(), digest_size=8).digest(), "little")
            for cid in customer_ids
        ),
        dtype=np.uint64,
        count=len(customer_ids),
    )
    return out


def label_key(label: str) -> np.uint64:
    """A 64-bit key for a campaign id (or any label)."""
    return np.uint64(
        int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "little")
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_draw(keys: np.ndarray, label: np.uint64 | np.ndarray) -> np.ndarray:
    """Uniform [0, 1) draws for customers ``keys (n,)`` and a label key (scalar or ``(n,)``).

    >>> keys = customer_keys([f"C{i}" for i in range(20000)], "salt")
    >>> u = uniform_draw(keys, label_key("birthday"))
    >>> bool(abs(u.mean() - 0.5) < 0.01)
    True
    """
    mixed = _splitmix64(keys ^ _splitmix64(np.asarray(label, dtype=np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


GLOBAL_CONTROL_LABEL = "__global_control__"


def in_global_control(keys: np.ndarray, fraction: float) -> np.ndarray:
    """``(n,)`` bool: customers in the global control group (never contacted)."""
    return uniform_draw(keys, label_key(GLOBAL_CONTROL_LABEL)) < fraction


@lru_cache(maxsize=256)
def _stream_key(stream: str) -> np.uint64:
    return label_key("__stream__:" + stream)


@dataclass(frozen=True)
class Draws:
    """The random numbers of a decision, keyed on (run seed, run date, customer).

    Row ``i``'s draws depend only on its customer, the seed and the date, never on which batch
    or partition the customer is decided in, so any split of a run decides the same. Each use
    names its stream (``"sample"``, ``"explore"``...), so draws for different purposes are
    independent. ``shared`` is one draw for the whole run (the same in every partition).

    >>> keys = customer_keys(["C1", "C2", "C3"], "salt")
    >>> a = Draws.for_run(keys, seed=7, day=date(2026, 1, 1))
    >>> b = Draws.for_run(keys[1:], seed=7, day=date(2026, 1, 1))
    >>> bool((a.uniform("sample")[1:] == b.uniform("sample")).all())
    True
    >>> bool((a.uniform("sample") != a.uniform("explore")).all())
    True
    """

    keys: np.ndarray  # (n,) uint64: customer key mixed with the run key
    run: np.uint64 = np.uint64(0)
    customers: np.ndarray | None = None  # (n,) uint64: the customer keys alone (every day alike)

    @classmethod
    def for_run(cls, customer_keys: np.ndarray, *, seed: int, day: date) -> Draws:
        seed_key = np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
        day_key = np.asarray([day.toordinal()], dtype=np.uint64)
        run = _splitmix64(seed_key ^ _splitmix64(day_key))
        customers = np.asarray(customer_keys, dtype=np.uint64)
        keys = _splitmix64(customers ^ run[0])
        return cls(keys, np.uint64(run[0]), _splitmix64(customers))

    @classmethod
    def seeded(cls, n: int, seed: int = 0) -> Draws:
        """Draws for ``n`` anonymous rows (tests, benchmarks, offline scoring)."""
        return cls.for_run(np.arange(n, dtype=np.uint64), seed=seed, day=date(2000, 1, 1))

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, rows: np.ndarray) -> Draws:
        """The draws of a subset of the rows (a mask or indices)."""
        customers = None if self.customers is None else self.customers[rows]
        return Draws(self.keys[rows], self.run, customers)

    def per_customer(self, stream: str) -> np.ndarray:
        """``(n,)`` uniform [0, 1) draws of ``stream`` that depend on the customer only: the
        same every day and for every seed (a customer stays in or out of a share)."""
        keys = self.keys if self.customers is None else self.customers
        return uniform_draw(keys, _stream_key(stream))

    def uniform(self, stream: str) -> np.ndarray:
        """``(n,)`` uniform [0, 1) draws of ``stream``."""
        return uniform_draw(self.keys, _stream_key(stream))

    def integers(self, high: int, stream: str) -> np.ndarray:
        """``(n,)`` integers in ``[0, high)`` of ``stream``."""
        return np.minimum((self.uniform(stream) * high).astype(np.int64), high - 1)

    def shared(self, stream: str) -> float:
        """One uniform [0, 1) draw of ``stream`` for the whole run."""
        return float(uniform_draw(np.asarray([self.run], dtype=np.uint64), _stream_key(stream))[0])
