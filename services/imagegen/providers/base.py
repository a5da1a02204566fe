"""What a provider is, and how its failures are classified."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from services.imagegen.prices import Usage


class Outcome(enum.Enum):
    """How one attempt ended; the names match the proto's AttemptOutcome."""

    SUCCESS = "success"
    HARD_FAILURE = "hard_failure"  # bad key, billing, quota, model gone: open the breaker
    CONTENT_POLICY = "content_policy"  # refused prompt: next provider, no breaker
    RATE_LIMITED = "rate_limited"  # 429: wait Retry-After only if it fits
    TRANSIENT = "transient"  # 5xx, connection error, empty data
    TIMEOUT = "timeout"
    INVALID_IMAGE = "invalid_image"  # bytes that do not decode as an image
    SKIPPED = "skipped"  # not tried: breaker, prompt too long, no time left


class ProviderFailure(Exception):
    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        *,
        retry_same: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        # Worth one more try of the same provider (if the budget allows).
        self.retry_same = retry_same
        self.retry_after = retry_after


@dataclass(frozen=True)
class PriceKey:
    """What decides an image's price: the size and quality actually sent."""

    size: str
    quality: str


@dataclass(frozen=True)
class ProviderImage:
    data: bytes
    key: PriceKey
    usage: Usage | None = None


class ImageProvider(Protocol):
    """One image model. ``generate`` makes exactly one request and returns the image bytes
    with what the provider reported it used, or raises ProviderFailure. It must not retry.
    ``timeout`` bounds each network step; the chain's clock bounds the whole attempt. Its
    HTTP requests must go through admission.py's hooks (the chain's limits hold there)."""

    name: str
    max_prompt_chars: int

    def price_key(self, size: tuple[int, int], quality: str) -> PriceKey: ...

    async def generate(self, prompt: str, size: tuple[int, int], quality: str, timeout: float) -> ProviderImage: ...
