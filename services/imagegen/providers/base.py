"""What a provider is, what it is asked, and how its failures are classified.

The seam between the chain and a vendor: a provider receives one :class:`ImageRequest` and
a deadline, makes exactly one request to its vendor and answers the image bytes or raises
:class:`ProviderFailure`. Limits, clocks, retries and breakers are the chain's business."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


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
        # The same provider may answer if asked again (the chain decides whether it does).
        self.retry_same = retry_same
        self.retry_after = retry_after


@dataclass(frozen=True)
class ImageRequest:
    """One image, as the chain asks every provider for it."""

    prompt: str
    size: tuple[int, int]
    # "low" | "medium" | "high" | "auto"; "" means the provider's configured quality.
    quality: str = ""
    scene: int = 0  # the video's scene it is for (0: none): a placeholder shows it


@dataclass(frozen=True)
class Usage:
    """The tokens a provider said an image used."""

    input_tokens: int = 0
    output_tokens: int = 0


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
    partials: int = 0  # partial images the provider sent before it (each one is billed)


@dataclass(frozen=True)
class Partial:
    """A partial image as the provider sent it (not yet checked)."""

    data: bytes
    index: int  # 0-based


# Where a streaming provider hands each partial image as it comes.
OnPartial = Callable[[Partial], Awaitable[None]]


class SendGate:
    """Lets a request be built while its call still waits for its places (its video's lane,
    the provider's limit), and sent only once they are held: a provider that `prepares`
    waits on it just before its request's bytes go (`SEND_GATE`, set by the chain in the
    request's own task). ``deadline`` is the request's, known when the gate opens."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self.deadline = 0.0

    @property
    def opened(self) -> bool:
        return self._open.is_set()

    def open(self, deadline: float) -> None:
        self.deadline = deadline
        self._open.set()

    async def passed(self) -> None:
        await self._open.wait()


# The gate of the request being made in this task (None: it may go at once).
SEND_GATE: ContextVar[SendGate | None] = ContextVar("send_gate", default=None)


async def wait_for_send_gate(*_: object) -> None:
    """Waits until this task's request may go (an httpx request hook)."""
    if (gate := SEND_GATE.get()) is not None:
        await gate.passed()


def sent_deadline(deadline: float) -> float:
    """The deadline of this task's request: its gate's, once the request was let go."""
    gate = SEND_GATE.get()
    return gate.deadline if gate is not None and gate.opened else deadline


class ImageProvider(Protocol):
    """One image model of one vendor account.

    ``generate`` makes exactly one request and must not retry. ``deadline`` is a
    ``time.monotonic()`` value: the request is abandoned then at the latest. With
    ``on_partial``, a provider that streams hands it each partial image as it comes (a model
    that refuses to stream is remembered and asked without it: not a failure). The chain may
    stop waiting earlier and let the request finish in the background (a provider may bill
    an abandoned request), so a provider never cancels on its own before the deadline."""

    name: str  # unique in the chain
    kind: str  # the registry's kind
    model: str  # what the requests name
    max_prompt_chars: int

    # Partial images asked for per image, and whether the model still streams them.
    partial_images: int
    streams: bool
    # Builds its request before its places are held and sends it at the `SEND_GATE`.
    prepares: bool

    def price_key(self, request: ImageRequest) -> PriceKey: ...

    async def generate(
        self, request: ImageRequest, deadline: float, on_partial: OnPartial | None = None
    ) -> ProviderImage: ...

    async def close(self) -> None: ...


def billed_partials(provider: ImageProvider, streamed: bool) -> int:
    """The partial images a call may be billed for on this provider (``streamed``: the call
    takes them)."""
    return provider.partial_images if streamed and provider.streams else 0
