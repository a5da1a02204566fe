"""Provider kinds: what each chain entry's `kind` builds. Adding a vendor is one module in
this package and one entry in KINDS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.imagegen.providers.base import ImageProvider
from services.imagegen.providers.google_imagen import DEFAULT_BASE_URL as GOOGLE_BASE_URL
from services.imagegen.providers.google_imagen import GoogleImagenProvider
from services.imagegen.providers.openai_images import OpenAIImageProvider, azure_client, openai_client

if TYPE_CHECKING:
    from services.imagegen.chain_config import ProviderEntry


@dataclass(frozen=True)
class Kind:
    build: Callable[[ProviderEntry, str], ImageProvider]
    key_env: str  # the variable that holds the key when the entry names none
    needs_base_url: bool = False
    default_base_url: str = ""
    # The vendor lists its models (GET /models): configured ones are checked at start.
    lists_models: bool = False
    # It can stream partial images (IMAGEGEN_PARTIAL_IMAGES; models that refuse are asked
    # without streaming after their first refusal).
    streams: bool = False


def _openai(entry: ProviderEntry, key: str) -> ImageProvider:
    return OpenAIImageProvider(
        openai_client(key, entry.base_url),
        entry.model,
        name=entry.name,
        kind=entry.kind,
        quality=entry.quality or "",
        output_format=entry.output_format,
        partial_images=entry.partial_images or 0,
    )


def _azure(entry: ProviderEntry, key: str) -> ImageProvider:
    return OpenAIImageProvider(
        azure_client(key, entry.base_url, entry.api_version),
        entry.deployment or entry.model,
        name=entry.name,
        kind=entry.kind,
        family=entry.model,
        quality=entry.quality or "",
        output_format=entry.output_format,
    )


def _google(entry: ProviderEntry, key: str) -> ImageProvider:
    return GoogleImagenProvider(key, entry.model, name=entry.name, base_url=entry.base_url)


KINDS: dict[str, Kind] = {
    "openai": Kind(_openai, "OPENAI_API_KEY", lists_models=True, streams=True),
    "openai-compatible": Kind(_openai, "OPENAI_API_KEY", needs_base_url=True, lists_models=True, streams=True),
    "azure-openai": Kind(_azure, "AZURE_OPENAI_API_KEY", needs_base_url=True),
    "google-imagen": Kind(_google, "GOOGLE_API_KEY", default_base_url=GOOGLE_BASE_URL),
}
