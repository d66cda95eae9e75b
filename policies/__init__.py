"""Policies: one strategy per module, registered by short name in ``POLICIES``.

Adding a policy is one module plus one line here; the contract suite
(``tests/policies/test_contract.py``) then runs on it automatically.
"""

from __future__ import annotations

from policies.base import Choice, Policy
from policies.epsilon_greedy import EpsilonGreedy
from policies.lin_ts import LinearTS
from policies.uniform import UniformPolicy
from policies.vw import VowpalPolicy

POLICIES: dict[str, type[Policy]] = {
    UniformPolicy.name: UniformPolicy,
    LinearTS.name: LinearTS,
    EpsilonGreedy.name: EpsilonGreedy,
    VowpalPolicy.name: VowpalPolicy,
}

__all__ = ["POLICIES", "Choice", "Policy", "UniformPolicy"]
