"""Policies: one strategy per module, registered by short name in ``POLICIES``.

Adding a policy is one module plus one line here; the contract suite
(``tests/policies/test_contract.py``) then runs on it automatically.
"""

from __future__ import annotations

from policies.base import Choice, Policy
from policies.uniform import UniformPolicy

POLICIES: dict[str, type[Policy]] = {
    UniformPolicy.name: UniformPolicy,
}

__all__ = ["POLICIES", "Choice", "Policy", "UniformPolicy"]
