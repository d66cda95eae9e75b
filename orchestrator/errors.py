"""Errors the engine raises, named after what failed.

Every error shown to a user is one line. ``InputError`` and its subclasses mean the user gave the
engine something it cannot accept (exit code 2, nothing written); other ``OrchestratorError``s are
runtime failures (exit code 1).
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code = 1


class InputError(OrchestratorError, ValueError):
    """Bad input: a file, an argument or a plan the engine cannot accept."""

    exit_code = 2


class PlanError(InputError):
    """A plan file that does not parse, does not validate or contradicts itself."""


class RuleError(InputError):
    """A target rule that does not parse or does not type-check.

    ``position`` is the 0-based character offset in the rule text where the problem starts.
    """

    def __init__(self, message: str, *, rule: str = "", position: int | None = None) -> None:
        self.rule = rule
        self.position = position
        self.reason = message
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where}" + (f" in rule {rule!r}" if rule else ""))


class ImportFileError(InputError):
    """A data file (customers, events, logs) with a malformed row, column or format."""


class CampaignNotFound(InputError, LookupError):
    """A campaign id that is not in the plan."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"no campaign with id {campaign_id!r}")


class NotFound(InputError, LookupError):
    """Any other named thing (exclusion, cap, customer, policy version) that does not exist."""


class SchemaNotInitialized(OrchestratorError, RuntimeError):
    """The database has no schema yet, or an older one."""


class RunInProgress(InputError, RuntimeError):
    """Another run holds the lock on the same database."""


class StateVersionError(OrchestratorError, ValueError):
    """Persisted state written by a newer version of the engine."""
