"""Google's Imagen models through the official `google-genai` SDK.

The SDK (3.x) serves Imagen's `generate_images` only through Vertex AI; with an API key it
uses Vertex AI express mode: `POST {base}/v1beta1/publishers/google/models/{model}:predict`
with the key in `x-goog-api-key`. The SDK's own retries are off (one attempt): the chain
is the only retry layer. Imagen takes aspect ratios, not pixel sizes, so the nearest ratio
to the size asked for is sent; the bytes decide the real size and format."""

from __future__ import annotations

import time
import warnings

import httpx2
from google import genai
from google.genai import errors, types

from services.imagegen.providers.base import ImageRequest, OnPartial, Outcome, PriceKey, ProviderFailure, ProviderImage

DEFAULT_BASE_URL = "https://aiplatform.googleapis.com"
ASPECT_RATIOS = {"1:1": 1.0, "3:4": 3 / 4, "4:3": 4 / 3, "9:16": 9 / 16, "16:9": 16 / 9}
# The SDK warns on every process's first call that generate_images will give way to
# generate_content; Imagen models are still served through it.
warnings.filterwarnings("ignore", "The generate_images method is deprecated", errors.ExperimentalWarning)
# Imagen's documented prompt limit is in tokens (480); this many characters stays inside it.
MAX_PROMPT_CHARS = 1_900


def aspect_ratio(size: tuple[int, int]) -> str:
    ratio = size[0] / size[1]
    return min(ASPECT_RATIOS, key=lambda name: abs(ASPECT_RATIOS[name] - ratio))


def classify(exc: Exception) -> ProviderFailure:
    """Map the SDK's errors to what the chain does next. Messages never carry the key."""
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderFailure(Outcome.TIMEOUT, "provider timed out")
    if isinstance(exc, httpx2.TransportError):
        return ProviderFailure(Outcome.TRANSIENT, "connection error", retry_same=True)
    if isinstance(exc, errors.APIError):
        status, code = exc.code, exc.status or ""
        label = f"HTTP {status}" + (f" {code}" if code else "")
        message = (exc.message or "").lower()
        if status in (401, 403):
            return ProviderFailure(Outcome.HARD_FAILURE, f"{label}: API key rejected or lacks access")
        if status == 404:
            return ProviderFailure(Outcome.HARD_FAILURE, f"{label}: model not found")
        if status == 429:
            return ProviderFailure(Outcome.RATE_LIMITED, label, retry_same=True)
        if status == 400 and ("safety" in message or "blocked" in message or "policy" in message):
            return ProviderFailure(Outcome.CONTENT_POLICY, f"{label}: prompt refused by safety filters")
        if status >= 500:
            return ProviderFailure(Outcome.TRANSIENT, label, retry_same=True)
        return ProviderFailure(Outcome.TRANSIENT, f"{label}: request rejected")
    return ProviderFailure(Outcome.TRANSIENT, f"unreadable answer from provider ({type(exc).__name__})")


class GoogleImagenProvider:
    def __init__(self, api_key: str, model: str, *, name: str = "", base_url: str = DEFAULT_BASE_URL) -> None:
        self.model = model
        self.name = name or model
        self.kind = "google-imagen"
        self.max_prompt_chars = MAX_PROMPT_CHARS
        self.partial_images, self.streams = 0, False  # Imagen answers the final alone
        self.prepares = False  # its request is built when it may go
        # The SDK's httpx transport, named: with `aiohttp` installed (the OpenAI client's
        # transport) the SDK would move onto it, whose hangs end in errors of another kind.
        self._http = httpx2.AsyncClient()
        self.client = genai.Client(
            vertexai=True,
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1), httpx_async_client=self._http
            ),
        )

    def price_key(self, request: ImageRequest) -> PriceKey:
        return PriceKey(aspect_ratio(request.size), "standard")

    async def close(self) -> None:
        await self.client.aio.aclose()
        await self._http.aclose()  # the SDK leaves a client it was given to its owner

    async def generate(
        self, request: ImageRequest, deadline: float, on_partial: OnPartial | None = None
    ) -> ProviderImage:
        key = self.price_key(request)
        timeout_ms = max(int((deadline - time.monotonic()) * 1000), 10)
        config = types.GenerateImagesConfig(
            number_of_images=1,
            aspect_ratio=key.size,
            output_mime_type="image/png",
            include_rai_reason=True,
            http_options=types.HttpOptions(timeout=timeout_ms),
        )
        try:
            response = await self.client.aio.models.generate_images(
                model=self.model, prompt=request.prompt, config=config
            )
        except Exception as exc:  # the SDK's and its transport's errors, classified
            raise classify(exc) from exc
        images = response.generated_images or []
        if not images:
            raise ProviderFailure(Outcome.TRANSIENT, "answer had no prediction", retry_same=True)
        first = images[0]
        data = first.image.image_bytes if first.image is not None else None
        if not data:
            if first.rai_filtered_reason:
                raise ProviderFailure(Outcome.CONTENT_POLICY, "prompt refused by safety filters")
            raise ProviderFailure(Outcome.TRANSIENT, "answer had no image bytes", retry_same=True)
        return ProviderImage(data, key)
