"""No docker engine runs here: check that docker-compose.yml and the Dockerfile describe
the same split as `make run` (commands, ports, variables)."""

from __future__ import annotations

import pytest
import yaml
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.common.config import ImagegenSettings, StatusSettings, StorageSettings, setting_names
from tools.processes import ROOT, SERVICES

SETTINGS: dict[str, type[BaseSettings]] = {
    "imagegen": ImagegenSettings,
    "storage": StorageSettings,
    "status": StatusSettings,
    "gateway": GatewaySettings,
}


def compose() -> dict:
    loaded: dict = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_the_same_commands_and_ports_as_make_run() -> None:
    services = {n: s for n, s in compose()["services"].items() if "profiles" not in s}
    assert set(services) == set(SERVICES)
    for name, (module, port_var, default_port) in SERVICES.items():
        svc = services[name]
        assert svc["command"] == ["python", "-m", module]
        assert svc["environment"][port_var] == str(default_port)
        assert f"127.0.0.1:{default_port}:{default_port}" in svc["ports"]


def test_every_compose_variable_is_a_setting_the_service_reads() -> None:
    kinds: dict[str, type[BaseSettings]] = {**SETTINGS, "imagegen-2": ImagegenSettings, "worker": GatewaySettings}
    for name, svc in compose()["services"].items():
        if name in ("postgres", "redis"):  # not ours
            continue
        known = setting_names(kinds[name])
        unknown = set(svc["environment"]) - known
        assert not unknown, f"{name} sets variables it never reads: {unknown}"


def test_gateway_reaches_the_services_by_their_compose_names() -> None:
    env = compose()["services"]["gateway"]["environment"]
    assert env["IMAGEGEN_ADDR"] == "dns:///imagegen-pool:50051"
    for name in ("storage", "status"):
        assert env[f"{name.upper()}_ADDR"] == f"{name}:{SERVICES[name][2]}"


def test_the_scale_profile_adds_postgres_redis_two_workers_and_a_second_imagegen() -> None:
    services = compose()["services"]
    scaled = {n for n, s in services.items() if s.get("profiles") == ["scale"]}
    assert scaled == {"postgres", "redis", "worker", "imagegen-2"}
    # Both imagegen replicas share their state through the profile's Redis when asked to.
    assert (
        services["imagegen-2"]["environment"]["IMAGEGEN_SHARED_STATE"]
        == "${IMAGEGEN_SHARED_STATE:-redis://redis:6379/0}"
    )
    assert services["imagegen"]["environment"]["IMAGEGEN_SHARED_STATE"] == "${IMAGEGEN_SHARED_STATE:-}"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["python", "-m", "gateway.worker"]
    for name in ("imagegen", "imagegen-2"):
        assert "imagegen-pool" in services[name]["networks"]["default"]["aliases"]


def test_dockerfile_copies_everything_the_processes_import() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("requirements-runtime.lock", "storyshort", "services", "gateway", "sql"):
        assert f"COPY {needed}" in dockerfile, f"the image lacks {needed}"
    assert "-r requirements-runtime.lock" in dockerfile


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#", "-")):
            package, _, version = line.partition("==")
            found[package.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_the_runtime_lock_pins_the_same_versions_and_no_dev_tool() -> None:
    everything, runtime = pins("requirements.lock"), pins("requirements-runtime.lock")
    assert runtime and all(everything.get(p) == v for p, v in runtime.items()), "the two locks disagree"
    for tool in ("pytest", "ruff", "mypy", "hypothesis", "schemathesis", "grpcio-tools", "py-spy"):
        assert tool not in runtime
    for needed in ("grpcio", "openai", "google-genai", "supabase", "fastapi", "psycopg", "procrastinate"):
        assert needed in runtime


def test_empty_variables_from_compose_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BUDGET_DAILY_USD", "IMAGEGEN_PRICES_FILE", "OPENAI_API_KEY", "DATABASE_URL"):
        monkeypatch.setenv(var, "")
    assert GatewaySettings().budget_daily_usd is None
    assert ImagegenSettings().prices_file is None and ImagegenSettings().openai_api_key is None
    assert StatusSettings().database_url is None


def test_a_malformed_cap_fails_at_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_VIDEO_USD", "ten dollars")
    with pytest.raises(ValueError, match="BUDGET_VIDEO_USD"):
        GatewaySettings()
    monkeypatch.setenv("BUDGET_VIDEO_USD", "-1")
    with pytest.raises(ValueError, match="BUDGET_VIDEO_USD"):
        GatewaySettings()
