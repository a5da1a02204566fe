"""Settings that cannot be misread: durations take units, a bare number that cannot be
meant as seconds is refused naming the unit, the frontend's NEXT_PUBLIC_SUPABASE_URL is
accepted, and every mistake is named at start, one line each, never with its value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.settings import GatewaySettings
from services.common.config import ImagegenSettings, StatusSettings, StorageSettings, load_settings
from tools.processes import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.endswith(("_TIMEOUT", "SUPABASE_URL")) or name in ("GATEWAY_PORT", "HEAL_AFTER"):
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("60", 60.0), ("60s", 60.0), ("60000ms", 60.0), ("1.5m", 90.0), ("2 min", 120.0), ("0.5", 0.5), ("1h", 3600.0)],
)
def test_durations_take_units(monkeypatch: pytest.MonkeyPatch, written: str, seconds: float) -> None:
    monkeypatch.setenv("IMAGE_GEN_TIMEOUT", written)
    assert load_settings(GatewaySettings).image_gen_timeout == seconds
    assert load_settings(ImagegenSettings).image_gen_timeout == seconds


def test_the_earlier_milliseconds_are_refused_naming_the_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_GEN_TIMEOUT", "60000")
    with pytest.raises(SystemExit) as stopped:
        load_settings(GatewaySettings)
    message = str(stopped.value)
    assert "IMAGE_GEN_TIMEOUT" in message and "60000ms" in message and "seconds" in message
    monkeypatch.setenv("IMAGE_GEN_TIMEOUT", "60000s")  # said in seconds: meant
    assert load_settings(GatewaySettings).image_gen_timeout == 60000.0


def test_long_durations_allow_a_day_as_a_bare_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAL_AFTER", "7200")
    assert load_settings(GatewaySettings).heal_after == 7200.0


def test_every_mistake_is_named_once_and_no_value_is_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "eighty")
    monkeypatch.setenv("UPLOAD_TIMEOUT", "soon")
    monkeypatch.setenv("STATUS_TIMEOUT", "-1")
    monkeypatch.setenv("RUNS", "sideways")
    with pytest.raises(SystemExit) as stopped:
        load_settings(GatewaySettings)
    lines = str(stopped.value).splitlines()
    assert lines[0] == "4 setting(s) not valid:"
    named = sorted(line.split(":")[0].strip() for line in lines[1:])
    assert named == ["GATEWAY_PORT", "RUNS", "STATUS_TIMEOUT", "UPLOAD_TIMEOUT"]
    assert "eighty" not in str(stopped.value)


def test_a_secret_in_a_bad_setting_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-secret-value-123"
    monkeypatch.setenv("IMAGEGEN_PROVIDER_LIMITS", secret)
    with pytest.raises(SystemExit) as stopped:
        load_settings(ImagegenSettings)
    assert "IMAGEGEN_PROVIDER_LIMITS" in str(stopped.value) and secret not in str(stopped.value)


def test_next_public_supabase_url_is_read_when_supabase_url_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", "https://frontend.supabase.co")
    assert load_settings(GatewaySettings).supabase_url == "https://frontend.supabase.co"
    assert load_settings(StorageSettings).supabase_url == "https://frontend.supabase.co"
    assert load_settings(StatusSettings).supabase_url == "https://frontend.supabase.co"
    monkeypatch.setenv("SUPABASE_URL", "https://server.supabase.co")
    assert load_settings(GatewaySettings).supabase_url == "https://server.supabase.co"


@pytest.mark.parametrize("module", ["gateway", "services.imagegen", "services.storage", "services.status"])
def test_a_process_started_with_a_bad_setting_exits_with_the_message_not_a_traceback(module: str) -> None:
    env = {**os.environ, "IMAGE_GEN_TIMEOUT": "60000", "SHUTDOWN_GRACE": "60000"}
    done = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SHUTDOWN_GRACE" in done.stderr and "60000ms" in done.stderr
    assert "Traceback" not in done.stderr


def test_cors_origins_are_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example, http://localhost:3000/")
    assert load_settings(GatewaySettings).cors_origins == ["https://app.example", "http://localhost:3000"]
    for wrong, words in (
        ("app.example", "not an origin"),
        ("https://app.example/path", "not an origin"),
        ("*,https://a.b", "alone"),
    ):
        monkeypatch.setenv("CORS_ORIGINS", wrong)
        with pytest.raises(SystemExit) as stopped:
            load_settings(GatewaySettings)
        assert "CORS_ORIGINS" in str(stopped.value) and words in str(stopped.value)
