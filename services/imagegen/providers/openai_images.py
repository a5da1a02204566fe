"""OpenAI image models on the real SDK: OpenAI itself, Azure OpenAI (the SDK's Azure
client: deployment and api-version) and any server that speaks the same API.

The SDK's own retries are off: the chain is the only retry layer. Each model family gets
only the parameters it accepts; every failure is classified for the chain.

(Over 300 lines: the request each family takes, streaming, and the classification of every
answer belong to one vendor's wire and read together.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI, DefaultAioHttpClient

from services.imagegen.providers.base import (
    ImageRequest,
    OnPartial,
    Outcome,
    Partial,
    PriceKey,
    ProviderFailure,
    ProviderImage,
    Usage,
    sent_deadline,
    wait_for_send_gate,
)

log = logging.getLogger(__name__)

# How long the end of a streamed body is waited for once its final image is in.
AFTER_FINAL = 0.1


@dataclass(frozen=True)
class ModelFamily:
    name: str
    sizes: tuple[tuple[int, int], ...]
    max_prompt_chars: int
    base64_only: bool  # GPT image models answer b64_json and reject response_format
    takes_quality: bool
    takes_output_format: bool


GPT_IMAGE = ModelFamily("gpt-image", ((1024, 1024), (1536, 1024), (1024, 1536)), 32_000, True, True, True)
DALL_E_3 = ModelFamily("dall-e-3", ((1024, 1024), (1792, 1024), (1024, 1792)), 4_000, False, False, False)
DALL_E_2 = ModelFamily("dall-e-2", ((256, 256), (512, 512), (1024, 1024)), 1_000, False, False, False)

# From the SDK's ImageModel deprecation notes: the date each model stopped answering.
RETIRED: dict[str, datetime] = {
    "dall-e-2": datetime(2026, 5, 12, tzinfo=UTC),
    "dall-e-3": datetime(2026, 5, 12, tzinfo=UTC),
    "gpt-image-1": datetime(2026, 10, 23, tzinfo=UTC),
}

# Error codes after which retrying this provider never helps (Azure's included).
HARD_CODES = {
    "billing_hard_limit_reached",
    "insufficient_quota",
    "invalid_api_key",
    "model_not_found",
    "DeploymentNotFound",
}
# A refused prompt: OpenAI's code, and Azure's content-filter codes.
CONTENT_CODES = {"content_policy_violation", "content_filter", "contentFilter", "ResponsibleAIPolicyViolation"}


def family_of(model: str) -> ModelFamily:
    if model.startswith("dall-e-3"):
        return DALL_E_3
    if model.startswith("dall-e-2"):
        return DALL_E_2
    return GPT_IMAGE


def nearest_size(family: ModelFamily, size: tuple[int, int]) -> tuple[int, int]:
    """The supported size closest in shape, then in area, to the one asked for."""
    width, height = size
    ratio = width / height

    def distance(candidate: tuple[int, int]) -> tuple[float, float]:
        cw, ch = candidate
        return (abs(cw / ch - ratio), abs(cw * ch - width * height))

    return min(family.sizes, key=distance)


def _error_code(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
    return str(getattr(exc, "code", "") or "")


class StreamRefused(Exception):
    """The model does not stream (a 400 naming `stream`): says nothing of its health."""


def _param(exc: openai.APIStatusError) -> str:
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else None
    return str(inner.get("param") or "") if isinstance(inner, dict) else ""


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderFailure(Outcome.INVALID_IMAGE, "b64_json is not valid base64") from exc


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    try:
        if ms := headers.get("retry-after-ms"):
            return max(float(ms) / 1000, 0.0)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = parsedate_to_datetime(value)
            return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _usage(response: Any) -> Usage | None:
    """The images API's token usage, where the answer carries it."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    return Usage(int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0))


def _dropped(exc: BaseException) -> bool:
    """A connection refused or hung up on, under the name of a timeout: the aiohttp
    transport maps every `aiohttp.ClientConnectionError` to httpx's ConnectTimeout."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__
    return False


def classify(exc: Exception) -> ProviderFailure:
    """Map an SDK error to what the chain does next. Messages never carry the key."""
    if isinstance(exc, openai.APITimeoutError) and not _dropped(exc):
        return ProviderFailure(Outcome.TIMEOUT, "provider timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderFailure(Outcome.TRANSIENT, "connection error", retry_same=True)
    if isinstance(exc, openai.APIStatusError):
        status, code = exc.status_code, _error_code(exc)
        label = f"HTTP {status}" + (f" {code}" if code else "")
        if status in (401, 403):
            return ProviderFailure(Outcome.HARD_FAILURE, f"{label}: API key rejected or lacks access")
        if code in HARD_CODES:
            return ProviderFailure(Outcome.HARD_FAILURE, f"{label}: retrying will not help")
        if status == 404:
            return ProviderFailure(Outcome.HARD_FAILURE, f"{label}: model not found")
        if code in CONTENT_CODES or "moderation" in code or "safety" in code:
            return ProviderFailure(Outcome.CONTENT_POLICY, f"{label}: prompt refused by content policy")
        if status == 429:
            return ProviderFailure(
                Outcome.RATE_LIMITED, label, retry_same=True, retry_after=_retry_after(exc.response.headers)
            )
        if status >= 500 or status in (408, 409):
            return ProviderFailure(Outcome.TRANSIENT, label, retry_same=True)
        return ProviderFailure(Outcome.TRANSIENT, f"{label}: request rejected")
    if isinstance(exc, openai.APIResponseValidationError | openai.APIError):
        return ProviderFailure(Outcome.TRANSIENT, "unreadable answer from provider", retry_same=True)
    return ProviderFailure(Outcome.TRANSIENT, f"{type(exc).__name__}")


def openai_client(api_key: str, base_url: str) -> AsyncOpenAI:
    """An SDK client with the SDK's own retries off (the chain is the only retry layer), on
    the SDK's aiohttp transport: a third less CPU per request than its default (httpx2), on
    the loop that hands a freed lane to the next scene (bench/RESULTS.md, "aiohttp")."""
    return AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, http_client=_http_client())


def azure_client(api_key: str, endpoint: str, api_version: str) -> AsyncAzureOpenAI:
    """The SDK's Azure client: `api-key` header, deployments in the path, api-version."""
    return AsyncAzureOpenAI(
        api_key=api_key,
        azure_endpoint=endpoint,
        api_version=api_version,
        max_retries=0,
        http_client=_http_client(),
    )


def _http_client() -> DefaultAioHttpClient:
    """The SDK's aiohttp client, whose every request waits at its task's `SEND_GATE` once
    the SDK has built it (an httpx request hook: it holds for every transport and proxy)."""
    return DefaultAioHttpClient(event_hooks={"request": [wait_for_send_gate]})


class OpenAIImageProvider:
    """One model (or Azure deployment) behind one SDK client, which it owns."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        name: str = "",
        kind: str = "openai",
        family: str = "",
        quality: str = "",
        output_format: str = "png",
        url_client: httpx.AsyncClient | None = None,
        partial_images: int = 0,
        streams: bool = True,
    ) -> None:
        self.client = client
        self.model = model  # what the request names: the model, or the Azure deployment
        self.name = name or model
        self.kind = kind
        self.family = family_of(family or model)
        self.max_prompt_chars = self.family.max_prompt_chars
        self.quality = quality
        self.output_format = output_format
        self._url_client = url_client
        # Only GPT image models stream; one that refuses is asked without streaming after.
        self.partial_images = partial_images if self.family.takes_output_format else 0
        self.streams = streams and self.family.takes_output_format
        self.prepares = True  # its client waits at the SEND_GATE

    def price_key(self, request: ImageRequest) -> PriceKey:
        width, height = nearest_size(self.family, request.size)
        sent_quality = (request.quality or self.quality) if self.family.takes_quality else ""
        return PriceKey(f"{width}x{height}", sent_quality or "auto")

    def request_params(self, request: ImageRequest) -> dict[str, Any]:
        key = self.price_key(request)
        params: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "n": 1, "size": key.size}
        if not self.family.base64_only:
            params["response_format"] = "b64_json"
        if self.family.takes_quality and (request.quality or self.quality):
            params["quality"] = request.quality or self.quality
        if self.family.takes_output_format and self.output_format:
            params["output_format"] = self.output_format
        return params

    async def close(self) -> None:
        await self.client.close()

    async def generate(
        self, request: ImageRequest, deadline: float, on_partial: OnPartial | None = None
    ) -> ProviderImage:
        """One request, abandoned at ``deadline`` (a time.monotonic() value) at the latest;
        streamed, with partial images to ``on_partial``, where the model streams."""
        if on_partial is not None and self.partial_images and self.streams:
            try:
                return await self._streamed(request, deadline, on_partial)
            except StreamRefused:
                self.streams = False  # remembered: asked without streaming from now on
                log.warning("the model refuses to stream; asked without it from now on", extra={"provider": self.name})
        key = self.price_key(request)
        timeout = max(deadline - time.monotonic(), 0.01)
        try:
            response = await self.client.images.generate(**self.request_params(request), timeout=timeout)
            items = response.data or []
            if not items:
                raise ProviderFailure(Outcome.TRANSIENT, "answer had an empty data list", retry_same=True)
            item = items[0]
            usage = _usage(response)
            if item.b64_json:
                try:
                    return ProviderImage(base64.b64decode(item.b64_json, validate=True), key, usage)
                except (binascii.Error, ValueError) as exc:
                    raise ProviderFailure(Outcome.INVALID_IMAGE, "b64_json is not valid base64") from exc
            if item.url:
                left = max(sent_deadline(deadline) - time.monotonic(), 0.01)
                return ProviderImage(await self._fetch(item.url, left), key, usage)
            raise ProviderFailure(Outcome.TRANSIENT, "answer had neither b64_json nor url", retry_same=True)
        except ProviderFailure:
            raise
        except Exception as exc:  # the SDK's errors, classified; anything else is transient
            raise classify(exc) from exc

    async def _streamed(self, request: ImageRequest, deadline: float, on_partial: OnPartial) -> ProviderImage:
        """The images API's streamed answer: each partial image to ``on_partial`` as it
        comes, then the completed image (and its usage, partials included).

        The body is read to its end after the final, so the connection goes back to the
        pool (left unread, it is dropped and the next request pays for a new one); a server
        that keeps the body open after its final is given AFTER_FINAL, then hung up on."""
        key = self.price_key(request)
        params = {**self.request_params(request), "stream": True, "partial_images": self.partial_images}
        partials = 0
        final: ProviderImage | None = None
        try:
            events = await self.client.images.generate(**params, timeout=max(deadline - time.monotonic(), 0.01))
            async with events, asyncio.timeout(None) as after_final:
                async for event in events:
                    if final is not None:
                        continue
                    if event.type == "image_generation.partial_image":
                        partials += 1
                        await on_partial(Partial(_b64(event.b64_json), event.partial_image_index))
                    elif event.type == "image_generation.completed":
                        final = ProviderImage(_b64(event.b64_json), key, _usage(event), partials)
                        after_final.reschedule(asyncio.get_running_loop().time() + AFTER_FINAL)
        except ProviderFailure:
            raise
        except openai.BadRequestError as exc:
            if _param(exc) == "stream":
                raise StreamRefused(str(exc)) from exc
            raise classify(exc) from exc
        except Exception as exc:  # the SDK's errors, classified; anything else is transient
            if final is not None:
                return final  # only what came after the final failed (or took too long)
            raise classify(exc) from exc
        if final is None:
            raise ProviderFailure(Outcome.TRANSIENT, "the stream ended before its final image", retry_same=True)
        return final

    async def _fetch(self, url: str, timeout: float) -> bytes:
        client = self._url_client or httpx.AsyncClient()
        try:
            response = await client.get(url, timeout=timeout)
            if response.status_code != 200:
                raise ProviderFailure(
                    Outcome.TRANSIENT, f"image URL answered HTTP {response.status_code}", retry_same=True
                )
            return response.content
        except httpx.TimeoutException as exc:
            raise ProviderFailure(Outcome.TIMEOUT, "image URL download timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderFailure(Outcome.TRANSIENT, f"image URL download failed: {type(exc).__name__}") from exc
        finally:
            if self._url_client is None:
                await client.aclose()


@dataclass(frozen=True)
class ModelCheck:
    available: bool
    reason: str


async def check_models(
    client: AsyncOpenAI, models: list[str], timeout: float, *, official: bool
) -> dict[str, ModelCheck] | None:
    """Read the provider's model list once. None when it cannot be read. ``official``: the
    API is OpenAI's own, whose model list carries no shutdown dates: the SDK's deprecation
    notes (RETIRED) say which models stopped answering there (other servers may still serve
    them)."""
    try:
        page = await client.models.list(timeout=timeout)
        listed: dict[str, Any] = {m.id: m for m in page.data}
    except Exception as exc:
        log.warning(
            "could not read the provider's model list; starting with every configured model",
            extra={"error": str(classify(exc))},
        )
        return None
    now = datetime.now(UTC)
    result: dict[str, ModelCheck] = {}
    for model in models:
        entry = listed.get(model)
        if entry is None:
            result[model] = ModelCheck(False, "not in the provider's model list (missing or retired)")
            continue
        shutdown = _shutdown_date(entry) or (RETIRED.get(model) if official else None)
        if shutdown is not None and shutdown <= now:
            result[model] = ModelCheck(False, f"retired on {shutdown.date().isoformat()}")
        else:
            result[model] = ModelCheck(True, "listed")
    return result


def _shutdown_date(entry: Any) -> datetime | None:
    """Compatible servers may mark a model with a shutdown date (unix seconds or ISO)."""
    extra = getattr(entry, "model_extra", None) or {}
    for key in ("shutdown_at", "shutdown_date", "deprecated_at"):
        value = extra.get(key)
        if value in (None, ""):
            continue
        try:
            if isinstance(value, int | float):
                return datetime.fromtimestamp(value, UTC)
            parsed = datetime.fromisoformat(str(value))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OSError, OverflowError):
            continue
    return None
