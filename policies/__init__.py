"""Policies: one strategy per module, registered by short name in ``POLICIES``.

Adding a policy is one module plus one line here; the contract suite
(``tests/policies/test_contract.py``) then runs on it automatically.

A policy's module is imported when its name is first looked up, not with this package: the
Vowpal Wabbit binding alone takes about 0.4 s to load, which every ``orch`` command that never
trains a model (``campaigns list``, ``plan validate``...) would pay.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping

from policies.base import Choice, Policy
from policies.uniform import UniformPolicy


class Registry(MutableMapping[str, type[Policy]]):
    """Policy classes by name, in registration order; one registered as ``"module:Class"``
    is imported on first use."""

    def __init__(self, entries: dict[str, str | type[Policy]]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> type[Policy]:
        entry = self._entries[name]  # KeyError for an unknown name, as a dict
        if isinstance(entry, str):
            module, cls = entry.split(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), cls)
        return entry

    def __setitem__(self, name: str, cls: type[Policy]) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


POLICIES: Registry = Registry(
    {
        UniformPolicy.name: UniformPolicy,
        "lints": "policies.lin_ts:LinearTS",
        "egreedy": "policies.epsilon_greedy:EpsilonGreedy",
        "vw": "policies.vw:VowpalPolicy",
    }
)

__all__ = ["POLICIES", "Choice", "Policy", "Registry", "UniformPolicy"]
