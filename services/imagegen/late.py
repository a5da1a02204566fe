"""Requests the chain stopped waiting for: a provider may bill them all the same, so they go
on. While their call is still in the chain, an image that comes before the next model's
answers the call (`Earlier`, `first_image`). Once the call has its answer they go on in the
background (until the model's own timeout, a bounded number at once), and an image that
arrives then is kept for its scene (the replay cache answers the scene's next call without
paying again)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.images import ImageInfo
from services.imagegen import metrics
from services.imagegen.providers.base import Outcome, ProviderImage
from services.imagegen.results import AttemptRecord, ChainResult

log = logging.getLogger(__name__)
Work = asyncio.Task[tuple[ProviderImage, ImageInfo]]


def has_image(work: Work) -> bool:
    """Whether the request is over with its checked image."""
    return work.done() and not work.cancelled() and work.exception() is None


@dataclass
class Earlier:
    """A request of a call still in the chain that the chain stopped waiting for."""

    provider: str
    work: Work
    started: float
    cost: Callable[[ProviderImage], float | None]


def arrived(earlier: list[Earlier]) -> Earlier | None:
    """The first earlier request that has its image."""
    return next((e for e in earlier if has_image(e.work)), None)


async def first_image(earlier: list[Earlier], work: Work | None, until: float) -> Earlier | None:
    """Wait until ``work`` has its image, or an earlier request has one, or ``work`` has
    failed, or ``until`` (a monotonic time). The earlier request whose image came, else None
    (the caller looks at ``work``)."""
    while True:
        if work is not None and has_image(work):
            return None
        if (first := arrived(earlier)) is not None:
            return first
        waits = {e.work for e in earlier if not e.work.done()}
        if work is not None:
            if work.done():
                return None
            waits.add(work)
        left = until - time.monotonic()
        if left <= 0 or not waits:
            return None
        await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)


class LateRequests:
    def __init__(self, most: int) -> None:
        self.most = most
        self._works: set[Work] = set()

    def __len__(self) -> int:
        return len(self._works)

    def keep(self, earlier: Earlier, context: dict[str, object], keep: Callable[[ChainResult], None] | None) -> None:
        """Let a request its call no longer waits for finish (unless too many already do:
        then it is cancelled); its image goes to ``keep``."""
        provider, work = earlier.provider, earlier.work
        if not work.done() and len(self._works) >= self.most:
            work.cancel()
            metrics.LATE_ABANDONED.labels(provider).inc()
        self._works.add(work)

        def finished(done: Work) -> None:
            self._works.discard(done)
            if not has_image(done):
                return
            image, info = done.result()
            ms = int((time.monotonic() - earlier.started) * 1000)
            record = AttemptRecord(
                provider, Outcome.SUCCESS, "arrived late; kept for its scene", ms, image.usage, earlier.cost(image)
            )
            metrics.LATE_IMAGES.labels(provider).inc()
            log.info("a late image was kept for its scene", extra={**context, "provider": provider, "ms": ms})
            if keep is not None:
                keep(ChainResult(image.data, info, provider, False, [record]))

        work.add_done_callback(finished)

    async def close(self) -> None:
        """Stop every request still finishing."""
        for work in list(self._works):
            work.cancel()
        await asyncio.gather(*self._works, return_exceptions=True)
