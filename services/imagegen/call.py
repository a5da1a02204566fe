"""What the chain works with: its policy, a provider with its limits (a slot), and one call
going down the chain (services/imagegen/chain.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.common.deadlines import Deadline
from services.common.images import ImageInfo
from services.imagegen.admission import Gate
from services.imagegen.breaker import Breaker
from services.imagegen.late import Earlier
from services.imagegen.providers.base import ImageProvider, ImageRequest, ProviderImage
from services.imagegen.results import AttemptRecord, ChainResult, PartialImage


@dataclass(frozen=True)
class ChainPolicy:
    # Kept back from every provider attempt so the placeholder always fits.
    placeholder_reserve: float = 0.5
    # An attempt with less time than this is not started.
    min_attempt: float = 0.25
    # Tries of the last real model again after a transient failure, when the deadline allows.
    same_provider_retries: int = 1
    retry_backoff: float = 0.2
    # Abandoned requests that may finish in the background at once.
    late_max: int = 16


@dataclass
class ProviderSlot:
    provider: ImageProvider
    concurrency: int
    attempt_timeout: float  # the model's own limit, and the bound on a late request
    breaker: Breaker
    available: bool = True
    unavailable_reason: str = ""
    # The provider's concurrency limit: this process's, or one shared by every replica.
    semaphore: Gate = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.concurrency)

    @property
    def name(self) -> str:
        return self.provider.name


@dataclass
class Call:
    """One Generate call going down the chain."""

    request: ImageRequest
    deadline: Deadline
    context: dict[str, object]
    max_cost: float | None
    lane: asyncio.Semaphore | None
    keep_late: Callable[[ChainResult], None] | None
    attempts: list[AttemptRecord] = field(default_factory=list)
    in_lane: bool = False  # holds a place in its video's lane
    on_partial: Callable[[PartialImage], Awaitable[None]] | None = None
    waiting: asyncio.Task[tuple[ProviderImage, ImageInfo]] | None = None  # the request the chain waits for
    earlier: list[Earlier] = field(default_factory=list)  # requests it stopped waiting for, still going on

    def waits_for_lane(self) -> bool:
        """Whether taking its lane will wait: it holds no place yet and none of its video's is free."""
        return not self.in_lane and self.lane is not None and self.lane.locked()

    def leave_lane(self) -> None:
        if self.in_lane and self.lane is not None:
            self.lane.release()
        self.in_lane = False
