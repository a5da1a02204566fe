"""Provider kinds: what each chain entry's `kind` builds, and what the rest of imagegen
needs to know of the vendor, as data: where its key and endpoint come from, whether a model
takes a quality setting (its default timeout follows from it), whether the vendor lists its
models (and how a configured one is checked), whether it streams partial images. No module
outside this package names a vendor. Adding a vendor is one module in this package and one
entry in KINDS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from services.imagegen.providers.base import ImageProvider
from services.imagegen.providers.google_imagen import DEFAULT_BASE_URL as GOOGLE_BASE_URL
from services.imagegen.providers.google_imagen import GoogleImagenProvider
from services.imagegen.providers.openai_images import (
    ModelCheck,
    OpenAIImageProvider,
    azure_client,
    check_models,
    family_of,
    openai_client,
)

# OpenAI's own API (IMAGEGEN_CHAIN with OPENAI_API_KEY talks to it, or to a compatible
# server at another OPENAI_BASE_URL).
OPENAI_API = "https://api.openai.com/v1"
# A chain-file entry's kind when it names none.
DEFAULT_KIND = "openai"


class Entry(Protocol):
    """What a kind builds a provider from (a chain entry, services/imagegen/chain_config.py)."""

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def deployment(self) -> str: ...

    @property
    def api_version(self) -> str: ...

    @property
    def quality(self) -> str | None: ...

    @property
    def output_format(self) -> str: ...

    @property
    def partial_images(self) -> int | None: ...


# A configured model checked against its vendor's list: None when the list cannot tell.
ModelChecker = Callable[[ImageProvider, float], Awaitable[ModelCheck | None]]


@dataclass(frozen=True)
class Kind:
    build: Callable[[Entry, str], ImageProvider]
    key_env: str  # the variable that holds the key when the entry names none
    needs_base_url: bool = False
    default_base_url: str = ""
    # The entry's base URL defaults to OPENAI_BASE_URL (the kind of IMAGEGEN_CHAIN's models).
    openai_base_url: bool = False
    # Whether a model takes a quality setting (low/medium/high): its default attempt timeout
    # follows its quality; other models get a flat one.
    takes_quality: Callable[[str], bool] = lambda _model: False
    # Checks a configured model at start against the vendor's model list (None: it has none).
    check_model: ModelChecker | None = None
    # It can stream partial images (IMAGEGEN_PARTIAL_IMAGES; models that refuse are asked
    # without streaming after their first refusal).
    streams: bool = False


def _openai(entry: Entry, key: str) -> ImageProvider:
    return OpenAIImageProvider(
        openai_client(key, entry.base_url),
        entry.model,
        name=entry.name,
        kind=entry.kind,
        quality=entry.quality or "",
        output_format=entry.output_format,
        partial_images=entry.partial_images or 0,
    )


def _azure(entry: Entry, key: str) -> ImageProvider:
    return OpenAIImageProvider(
        azure_client(key, entry.base_url, entry.api_version),
        entry.deployment or entry.model,
        name=entry.name,
        kind=entry.kind,
        family=entry.model,
        quality=entry.quality or "",
        output_format=entry.output_format,
    )


def _google(entry: Entry, key: str) -> ImageProvider:
    return GoogleImagenProvider(key, entry.model, name=entry.name, base_url=entry.base_url)


def _listed(official: bool) -> ModelChecker:
    """GET /models on an OpenAI-shaped API; ``official``: OpenAI's own (its retired models
    are known from the SDK's notes)."""

    async def check(provider: ImageProvider, timeout: float) -> ModelCheck | None:
        if not isinstance(provider, OpenAIImageProvider):
            return None
        checks = await check_models(provider.client, [provider.model], timeout, official=official)
        return checks.get(provider.model) if checks is not None else None

    return check


def _gpt_quality(model: str) -> bool:
    return family_of(model).takes_quality


KINDS: dict[str, Kind] = {
    "openai": Kind(
        _openai,
        "OPENAI_API_KEY",
        openai_base_url=True,
        takes_quality=_gpt_quality,
        check_model=_listed(official=True),
        streams=True,
    ),
    "openai-compatible": Kind(
        _openai,
        "OPENAI_API_KEY",
        needs_base_url=True,
        takes_quality=_gpt_quality,
        check_model=_listed(official=False),
        streams=True,
    ),
    "azure-openai": Kind(_azure, "AZURE_OPENAI_API_KEY", needs_base_url=True, takes_quality=_gpt_quality),
    "google-imagen": Kind(_google, "GOOGLE_API_KEY", default_base_url=GOOGLE_BASE_URL),
}


def environment_kind(base_url: str) -> str:
    """The kind of IMAGEGEN_CHAIN's models: OpenAI's own API, or a compatible server."""
    return "openai" if base_url.rstrip("/") == OPENAI_API else "openai-compatible"
