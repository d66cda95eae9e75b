"""Target rules: the small condition language marketers write to pick a campaign's customers.

Text is parsed (``parser``), type-checked against the fields a plan may use (``check``) and
compiled to a vectorized evaluation over typed column arrays (``compile``, ``columns``). User text
is never evaluated as Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orchestrator.rules.ast import Node
from orchestrator.rules.check import FIELD_TYPES, check, fields_used
from orchestrator.rules.columns import (
    BoolColumn,
    Column,
    Columns,
    DateColumn,
    NumberColumn,
    StringColumn,
    column_from_values,
)
from orchestrator.rules.compile import CompiledRule, compile_rule, evaluate_row
from orchestrator.rules.parser import parse
from orchestrator.rules.printer import to_text

__all__ = [
    "FIELD_TYPES",
    "BoolColumn",
    "Column",
    "Columns",
    "CompiledRule",
    "DateColumn",
    "Node",
    "NumberColumn",
    "Rule",
    "StringColumn",
    "check",
    "column_from_values",
    "compile_rule",
    "evaluate_row",
    "fields_used",
    "parse",
    "to_text",
]


@dataclass(frozen=True, eq=False)
class Rule:
    """A target rule parsed, type-checked and compiled; build one with ``Rule.compile``.

    >>> schema = {"lifecycle_stage": "string", "monetary": "number", "email_opt_out": "bool"}
    >>> rule = Rule.compile(
    ...     'lifecycle_stage in ["active", "at_risk"] and monetary >= 50 and not email_opt_out',
    ...     schema,
    ... )
    >>> sorted(rule.fields)
    ['email_opt_out', 'lifecycle_stage', 'monetary']
    >>> columns = {
    ...     "lifecycle_stage": column_from_values("string", ["active", "at_risk", "lapsed", None]),
    ...     "monetary": column_from_values("number", [80, 120.5, 300, 90]),
    ...     "email_opt_out": column_from_values("bool", [False, None, False, False]),
    ... }
    >>> rule.evaluate(columns, 4).tolist()  # unknown opt-out and unknown stage are not targeted
    [True, False, False, False]
    >>> Rule.compile("monetary >= '50'", schema)
    Traceback (most recent call last):
    ...
    orchestrator.errors.RuleError: cannot compare number field 'monetary' with string '50' \
at position 9 in rule "monetary >= '50'"
    """

    text: str
    node: Node
    fields: frozenset[str]
    compiled: CompiledRule

    @classmethod
    def compile(cls, text: str, schema: Mapping[str, str]) -> Rule:
        """Parse, type-check and compile ``text``; raise ``RuleError`` on the first problem."""
        node = parse(text)
        compiled = compile_rule(node, schema, rule=text)
        return cls(text=text, node=node, fields=compiled.fields, compiled=compiled)

    @property
    def canonical(self) -> str:
        """The rule in canonical form, as ``to_text`` prints it."""
        return to_text(self.node)

    def evaluate(self, columns: Columns, n: int) -> NDArray[np.bool_]:
        """Return a bool array of shape ``(n,)``, True for the customers the rule targets."""
        return self.compiled(columns, n)
