"""Requests the chain stopped waiting for: a provider may bill them all the same, so they go
on in the background (until the model's own timeout, a bounded number at once), and an image
that arrives late is kept for its scene (the replay cache answers the scene's next call
without paying again)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from services.common.images import ImageInfo
from services.imagegen import metrics
from services.imagegen.providers.base import Outcome, ProviderImage
from services.imagegen.results import AttemptRecord, ChainResult

log = logging.getLogger(__name__)
Work = asyncio.Task[tuple[ProviderImage, ImageInfo]]


class LateRequests:
    def __init__(self, most: int) -> None:
        self.most = most
        self._works: set[Work] = set()

    def __len__(self) -> int:
        return len(self._works)

    def keep(
        self,
        provider: str,
        work: Work,
        started: float,
        context: dict[str, object],
        cost: Callable[[ProviderImage], float | None],
        keep: Callable[[ChainResult], None] | None,
    ) -> None:
        """Let ``work`` finish (unless too many already do: then it is cancelled); its image,
        priced by ``cost``, goes to ``keep``."""
        if not work.done() and len(self._works) >= self.most:
            work.cancel()
            metrics.LATE_ABANDONED.labels(provider).inc()
        self._works.add(work)

        def finished(done: Work) -> None:
            self._works.discard(done)
            if done.cancelled() or done.exception() is not None:
                return
            image, info = done.result()
            ms = int((time.monotonic() - started) * 1000)
            record = AttemptRecord(
                provider, Outcome.SUCCESS, "arrived late; kept for its scene", ms, image.usage, cost(image)
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
