"""The deployment files: docker-compose.yml and the Dockerfile say what the engine needs, and
what they call exists (the CLI's commands and options, the settings). Images cannot be pulled
here; the same topology runs natively in tests/daemon/test_processes.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_healthchecks_and_order() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "init", "daemon"}
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"]) and "ports" not in pg
    init, daemon = services["init"], services["daemon"]
    assert init["command"] == ["init"] and init["restart"] == "no"
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert daemon["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    assert "/healthz" in " ".join(daemon["healthcheck"]["test"])
    assert all(":" not in str(p) for p in daemon.get("ports", []))  # no fixed host port


def test_compose_calls_what_the_cli_and_settings_have() -> None:
    daemon = COMPOSE["services"]["daemon"]
    command = daemon["command"]
    assert command[0] == "daemon"
    help_text = CliRunner().invoke(app, ["daemon", "--help"]).output
    for option in (c for c in command[1:] if c.startswith("--")):
        assert option in help_text
    known = {f"ORCH_{name.upper()}" for name in Settings.model_fields}
    for service in ("init", "daemon"):
        env = COMPOSE["services"][service]["environment"]
        assert set(env) <= known, set(env) - known
    assert re.match(r"postgresql://", daemon["environment"]["ORCH_DATABASE_URL"])


def test_dockerfile_is_slim_non_root_and_runs_orch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert user is not None and user.group(1) not in ("root", "0")
    assert 'ENTRYPOINT ["orch"]' in text and "pip install ." in text
    for folder in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / folder).exists(), folder


def test_docker_compose_validates_the_file() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (.ci/run installs Debian's package)")
        pytest.skip("docker-compose not installed (`apt-get install docker-compose`)")
    done = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
