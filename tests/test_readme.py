"""The README stays true: its first lines are the two commands, every setting is listed,
and its grpcurl lines work against a running system with the real grpcurl."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from services.common.config import ImagegenSettings, StatusSettings, StorageSettings, setting_names
from tools.processes import ROOT, System

README = (ROOT / "README.md").read_text()
GRPCURL = Path(sys.executable).parent / "grpcurl"


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:8])
    assert "make run" in head and "make test" in head


def test_every_setting_is_documented_with_its_default() -> None:
    for settings in (ImagegenSettings, StorageSettings, StatusSettings, GatewaySettings):
        for name in setting_names(settings):
            assert f"| `{name}` |" in README, f"{name} is not in the README's configuration table"


def grpcurl_lines() -> list[str]:
    block = README.split("## gRPC services (grpcurl)", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith(".venv/bin/grpcurl ")]


@pytest.mark.slow
def test_the_readme_grpcurl_lines_work(make_system: Callable[..., System]) -> None:
    system = make_system()
    # The README uses the default ports; this system runs on free ones.
    ports = {
        str(default): str(system.port(name))
        for name, default in (("imagegen", 50051), ("storage", 50052), ("status", 50053))
    }
    system.start_all()
    lines = grpcurl_lines()
    assert len(lines) >= 8
    for line in lines:
        args = shlex.split(re.sub(r"127\.0\.0\.1:(5005[123])", lambda m: f"127.0.0.1:{ports[m.group(1)]}", line))
        # As written: the command is the path the README gives, from the repository's root.
        assert (ROOT / args[0]).resolve() == GRPCURL.resolve()
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
