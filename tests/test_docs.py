"""Documented or it fails: the CLI reference is current and every setting is described."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli.docgen import render
from orchestrator.config import Settings

ROOT = Path(__file__).parent.parent


def test_cli_reference_is_generated_from_the_current_help() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run `make docs`"


def test_every_setting_is_documented() -> None:
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for name in Settings.model_fields:
        assert f"ORCH_{name.upper()}" in docs, f"ORCH_{name.upper()} is not in docs/"


def test_every_plan_field_is_documented() -> None:
    from orchestrator.plan import (
        CampaignSpec,
        CapSpec,
        ExclusionSpec,
        JourneySpec,
        JourneyStep,
        JourneyTrigger,
        Plan,
        PlanSettings,
        PolicySettings,
        TreatmentSpec,
    )

    reference = (ROOT / "docs" / "plan.md").read_text()
    for model in (
        Plan,
        PlanSettings,
        PolicySettings,
        CampaignSpec,
        TreatmentSpec,
        CapSpec,
        ExclusionSpec,
        JourneySpec,
        JourneyStep,
        JourneyTrigger,
    ):
        for name in model.model_fields:
            assert f"`{name}`" in reference, f"{model.__name__}.{name} is not in docs/plan.md"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
