"""The chain as configured: which providers, in which order, each with its own vendor,
credentials, timeout, concurrency and price; read and checked once at start.

Two ways to say it. `IMAGEGEN_CHAIN_FILE` names a JSON file:

    {"providers": [
      {"kind": "openai", "model": "gpt-image-2.5-sunburst"},
      {"kind": "azure-openai", "model": "gpt-image-2", "deployment": "images",
       "base_url": "https://my-resource.openai.azure.com", "api_key_env": "AZURE_OPENAI_API_KEY"},
      {"kind": "google-imagen", "model": "imagen-4.0-generate-001", "timeout": 40}]}

Without it, `IMAGEGEN_CHAIN` lists OpenAI models that share `OPENAI_API_KEY` and
`OPENAI_BASE_URL`, with `IMAGEGEN_PROVIDER_LIMITS` for per-model limits (as before).
Keys are read from the variables the entries name, never from the file itself.

A configuration that cannot work is refused at start with one message per mistake: an
unknown kind, a missing key or base URL, two entries with one name, or an IMAGE_GEN_TIMEOUT that
leaves no model a useful attempt."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.config import ImagegenSettings
from services.imagegen.prices import ModelPrice
from services.imagegen.providers.registry import DEFAULT_KIND, KINDS, environment_kind

log = logging.getLogger(__name__)

Quality = Literal["low", "medium", "high", "auto"]
# Default attempt timeout by GPT image quality, from published latencies (README: Provider
# chain): `low` takes seconds, `medium` tens of seconds, `high` up to about four minutes at
# large sizes. Models without a quality setting (DALL-E, Imagen) take up to tens of seconds.
QUALITY_TIMEOUTS: dict[str, float] = {"low": 30.0, "medium": 90.0, "high": 300.0, "auto": 300.0}
OTHER_TIMEOUT = 60.0


class ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = DEFAULT_KIND
    model: str = Field(min_length=1)
    # Unique in the chain: it names the provider in answers, metrics, breakers and prices.
    name: str = ""
    deployment: str = ""  # azure-openai: the deployment the request names (default: model)
    api_version: str = "2025-04-01-preview"  # azure-openai
    api_key_env: str = Field("", pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*$")
    base_url: str = ""
    timeout: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1)
    quality: Quality | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"
    price: ModelPrice | None = None
    # Partial images streamed before the final (0-3; None: IMAGEGEN_PARTIAL_IMAGES), where
    # the vendor and model stream.
    partial_images: int | None = Field(None, ge=0, le=3)

    @model_validator(mode="after")
    def _defaults(self) -> ProviderEntry:
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if kind.needs_base_url and not self.base_url:
            raise ValueError(f"{self.kind} entries need base_url (the endpoint to call)")
        self.base_url = self.base_url or kind.default_base_url
        self.api_key_env = self.api_key_env or kind.key_env
        self.name = self.name or self.model
        return self

    def attempt_timeout(self, settings: ImagegenSettings) -> float:
        if self.timeout is not None:
            return self.timeout
        if settings.attempt_timeout is not None:
            return settings.attempt_timeout
        if not KINDS[self.kind].takes_quality(self.model):
            return OTHER_TIMEOUT
        return QUALITY_TIMEOUTS[self.quality or settings.quality]


class ChainFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderEntry]


class ChainConfigError(SystemExit):
    """The chain cannot work as configured; the message says what to change."""


def load_entries(settings: ImagegenSettings) -> list[ProviderEntry]:
    """The configured entries (empty: the placeholder alone), checked."""
    file = settings.chain_file
    entries = _from_file(file) if file is not None else _from_environment(settings)
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ChainConfigError(f"IMAGEGEN_CHAIN_FILE: the names {', '.join(twice)} stand twice; give each a name")
    for entry in entries:
        if entry.quality is None:
            entry.quality = settings.quality
        if entry.partial_images is None:
            entry.partial_images = settings.partial_images if KINDS[entry.kind].streams else 0
        if KINDS[entry.kind].openai_base_url and not entry.base_url:
            entry.base_url = settings.openai_base_url
    check_time_budget(settings, entries)
    return entries


def _from_file(path: Path) -> list[ProviderEntry]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChainConfigError(f"IMAGEGEN_CHAIN_FILE {path}: cannot read it as JSON: {exc}") from exc
    try:
        entries = ChainFile.model_validate(raw).providers
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()[:8]
        )
        raise ChainConfigError(f"IMAGEGEN_CHAIN_FILE {path} is malformed: {problems}") from exc
    missing = [f"{e.name} ({e.api_key_env})" for e in entries if not os.environ.get(e.api_key_env)]
    if missing:
        raise ChainConfigError(
            f"IMAGEGEN_CHAIN_FILE {path}: no key for {', '.join(missing)}: set those variables or remove the entries"
        )
    return entries


def _from_environment(settings: ImagegenSettings) -> list[ProviderEntry]:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if not key or not settings.chain:
        return []
    entries = []
    for model in settings.chain:
        limits = settings.provider_limits.get(model)
        entries.append(
            ProviderEntry(
                kind=environment_kind(settings.openai_base_url),
                model=model,
                base_url=settings.openai_base_url,
                api_key_env="OPENAI_API_KEY",
                timeout=limits.timeout if limits else None,
                concurrency=limits.concurrency if limits else None,
                output_format=settings.output_format,
            )
        )
    return entries


def key_of(entry: ProviderEntry, settings: ImagegenSettings) -> str:
    if entry.api_key_env == "OPENAI_API_KEY" and settings.openai_api_key:
        return settings.openai_api_key.get_secret_value()
    return os.environ.get(entry.api_key_env, "")


def check_time_budget(settings: ImagegenSettings, entries: list[ProviderEntry]) -> None:
    """Refuse a budget that gives no model a useful attempt; say where attempts are cut."""
    if not entries:
        return
    usable = settings.image_gen_timeout - settings.placeholder_reserve
    share = usable / len(entries)
    if share < settings.min_attempt:
        raise ChainConfigError(
            f"IMAGE_GEN_TIMEOUT={settings.image_gen_timeout:g} s, less IMAGEGEN_PLACEHOLDER_RESERVE="
            f"{settings.placeholder_reserve:g} s, shared among {len(entries)} models gives each "
            f"{max(share, 0):.2f} s, below IMAGEGEN_MIN_ATTEMPT={settings.min_attempt:g} s: raise "
            "IMAGE_GEN_TIMEOUT or shorten the chain"
        )
    for entry in entries:
        timeout = entry.attempt_timeout(settings)
        needed = timeout * len(entries) + settings.placeholder_reserve
        if timeout > 1.1 * share:  # a cut worth knowing about
            log.warning(
                "a model's attempts will be cut to its fair share of IMAGE_GEN_TIMEOUT",
                extra={
                    "provider": entry.name,
                    "attempt_timeout_s": timeout,
                    "fair_share_s": round(share, 2),
                    "full_time_needs": f"IMAGE_GEN_TIMEOUT >= {needed:g}",
                },
            )
        if KINDS[entry.kind].takes_quality(entry.model):
            typical = QUALITY_TIMEOUTS[entry.quality or settings.quality]
            if timeout < typical:
                log.warning(
                    "a model's timeout is short for its quality: many requests may end as timeouts",
                    extra={
                        "provider": entry.name,
                        "quality": entry.quality,
                        "timeout_s": timeout,
                        "typical_s": typical,
                    },
                )
