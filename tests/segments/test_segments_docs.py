"""Documented or it fails: every segmentation setting, option, command and column is in the docs."""

from __future__ import annotations

from pathlib import Path

import typer.main

from orchestrator.cli.segments_cmds import segments_app
from orchestrator.features import COMPUTED_FEATURES, LIFECYCLE_STAGES
from orchestrator.segments.config import DEFAULT_CELLS, LifecycleConfig, ModelConfig, RfmConfig

DOC = (Path(__file__).parents[2] / "docs" / "segments.md").read_text()


def test_every_setting_is_documented() -> None:
    for prefix, model in (
        ("lifecycle", LifecycleConfig),
        ("rfm", RfmConfig),
        ("model", ModelConfig),
    ):
        for name in model.model_fields:
            assert f"`{prefix}.{name}`" in DOC, f"{prefix}.{name} is not in docs/segments.md"


def test_every_command_and_option_is_documented() -> None:
    group = typer.main.get_command(segments_app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"orch segments {name}" in DOC, name
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in DOC or f"{opt} " in DOC, f"{name} {opt}"


def test_every_column_stage_and_cell_is_documented() -> None:
    for name in (*COMPUTED_FEATURES, *LIFECYCLE_STAGES, *(c.name for c in DEFAULT_CELLS)):
        assert f"`{name}`" in DOC, name
