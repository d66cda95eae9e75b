"""Deterministic, policy-independent uniform draws for test/control assignment.

A customer's draw for a campaign depends only on (customer id, campaign id, salt), so reruns
reproduce it and a campaign's control group is sticky. The customer id is hashed once per batch
(blake2b); campaigns are mixed in with splitmix64, vectorized.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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
