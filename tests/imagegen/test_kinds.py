"""Vendor kinds are data (services/imagegen/providers/registry.py): what the chain needs to
know of a vendor (default timeout by quality, the model-list check, streaming, the base URL
setting) comes from its Kind, so a vendor is added in its module and one entry, and no
module outside providers/ names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.config import ImagegenSettings
from services.imagegen.chain_config import OTHER_TIMEOUT, QUALITY_TIMEOUTS, ProviderEntry, load_entries
from services.imagegen.providers import registry
from services.imagegen.providers.registry import KINDS, Kind

IMAGEGEN = Path(__file__).resolve().parents[2] / "services" / "imagegen"


def test_no_module_outside_providers_names_a_vendor_kind() -> None:
    named = re.compile("|".join(re.escape(f'"{kind}"') for kind in KINDS))
    offenders = [
        f"{path.relative_to(IMAGEGEN)}:{number}"
        for path in IMAGEGEN.rglob("*.py")
        if "providers" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if named.search(line)
        and not line.lstrip().startswith(("#", '{"kind"', '"kind"'))
        and "kind: str = " not in line
    ]
    assert offenders == []


def test_a_new_kind_brings_its_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A vendor the chain has never heard of: its Kind alone decides the entry's defaults."""
    kinds = {
        **KINDS,
        "acme-quality": Kind(
            KINDS["openai"].build,
            "ACME_KEY",
            default_base_url="https://acme.example",
            takes_quality=lambda m: True,
            streams=True,
        ),
        "acme-flat": Kind(KINDS["openai"].build, "ACME_KEY", default_base_url="https://acme.example"),
    }
    monkeypatch.setattr(registry, "KINDS", kinds)
    monkeypatch.setattr("services.imagegen.chain_config.KINDS", kinds)
    chain = tmp_path / "chain.json"
    chain.write_text(
        '{"providers": [{"kind": "acme-quality", "model": "painter-1", "quality": "medium"},'
        ' {"kind": "acme-flat", "model": "sketcher-1"}]}'
    )
    monkeypatch.setenv("ACME_KEY", "acme-key")
    settings = ImagegenSettings.model_validate({"IMAGEGEN_CHAIN_FILE": str(chain), "IMAGE_GEN_TIMEOUT": "600"})
    quality, flat = load_entries(settings)
    assert (quality.base_url, quality.api_key_env) == ("https://acme.example", "ACME_KEY")
    assert quality.attempt_timeout(settings) == QUALITY_TIMEOUTS["medium"]
    assert flat.attempt_timeout(settings) == OTHER_TIMEOUT
    assert quality.partial_images == settings.partial_images and flat.partial_images == 0


def test_the_known_kinds_keep_their_defaults() -> None:
    settings = ImagegenSettings.model_validate({"IMAGEGEN_QUALITY": "high"})
    gpt = ProviderEntry(kind="openai", model="gpt-image-2")
    imagen = ProviderEntry(kind="google-imagen", model="imagen-4.0-generate-001")
    dalle = ProviderEntry(kind="azure-openai", model="dall-e-3", base_url="https://r.openai.azure.com")
    assert gpt.attempt_timeout(settings) == QUALITY_TIMEOUTS["high"]
    assert imagen.attempt_timeout(settings) == OTHER_TIMEOUT
    assert dalle.attempt_timeout(settings) == OTHER_TIMEOUT
    assert KINDS["openai"].check_model is not None and KINDS["google-imagen"].check_model is None
    assert registry.environment_kind("https://api.openai.com/v1/") == "openai"
    assert registry.environment_kind("http://127.0.0.1:9/v1") == "openai-compatible"
