"""Images already paid for, answered again instead of bought again.

When a caller dies after imagegen paid for an image (a worker killed mid-run, a gateway
restarted), the retried scene asks for the same image. A bounded in-memory cache keyed by
(video, scene, prompt, size, quality) answers it without a second provider request. An
image that arrived after the chain stopped waiting for it is kept the same way, so the
scene's next call (a resume, a heal) gets it without paying again. It is per process: with
several imagegen replicas a retry may land on another one (README: Scaling out).
Placeholders are never cached."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from services.imagegen import metrics
from services.imagegen.providers.base import Outcome
from services.imagegen.results import AttemptRecord, ChainResult


@dataclass(frozen=True)
class ReplayKey:
    digest: str

    @classmethod
    def of(
        cls, video_id: str, scene: int, prompt: str, size: tuple[int, int], quality: str, variant: str = ""
    ) -> ReplayKey | None:
        if not video_id or scene < 1:
            return None  # only scenes of a video are retried by the pipeline
        raw = "\x00".join([video_id, str(scene), prompt, f"{size[0]}x{size[1]}", quality, variant])
        return cls(hashlib.sha256(raw.encode()).hexdigest())


class ReplayCache:
    def __init__(self, max_bytes: int, ttl: float) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._items: OrderedDict[ReplayKey, tuple[ChainResult, float]] = OrderedDict()
        self._bytes = 0

    def get(self, key: ReplayKey | None) -> ChainResult | None:
        if key is None:
            return None
        found = self._items.get(key)
        if found is None:
            return None
        result, stored = found
        if time.monotonic() - stored > self.ttl:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return result

    def put(self, key: ReplayKey | None, result: ChainResult) -> None:
        if key is None or result.placeholder or len(result.image) > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (result, time.monotonic())
        self._bytes += len(result.image)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: ReplayKey) -> None:
        result, _ = self._items.pop(key)
        self._bytes -= len(result.image)


class PaidImages:
    """The replay layer in front of the chain: a call whose image was already paid for is
    answered from the cache; a new call runs to the end even when its caller goes away (a
    provider charges for an image all the same), and its image, or one that arrives late,
    waits in the cache for the caller's retry."""

    def __init__(self, cache: ReplayCache) -> None:
        self.cache = cache
        self._inflight: set[asyncio.Task[ChainResult]] = set()

    def replay(self, key: ReplayKey | None) -> ChainResult | None:
        """The paid image answered again at no cost, or None. Its cost is reported again:
        the run that paid never got to record it."""
        replayed = self.cache.get(key)
        if replayed is None:
            return None
        metrics.REPLAYS.inc()
        paid = next((a for a in replayed.attempts if a.outcome is Outcome.SUCCESS), None)
        record = AttemptRecord(
            replayed.provider,
            Outcome.SKIPPED,
            "replayed: this image was already paid for",
            0,
            paid.usage if paid else None,
            paid.cost if paid else 0.0,
        )
        return ChainResult(replayed.image, replayed.info, replayed.provider, False, [record])

    async def run(
        self,
        key: ReplayKey | None,
        generate: Callable[[Callable[[ChainResult], None]], Coroutine[None, None, ChainResult]],
        started: Callable[[], bool],
    ) -> ChainResult:
        """Run ``generate`` (given the cache's keeper for late images) to the end. A caller
        that leaves before ``started()`` (nothing sent yet) cancels it."""
        work = asyncio.create_task(generate(lambda late: self.cache.put(key, late)))
        self._inflight.add(work)
        work.add_done_callback(lambda done: self._keep(key, done))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if not started():
                work.cancel()
            raise

    def _keep(self, key: ReplayKey | None, done: asyncio.Task[ChainResult]) -> None:
        self._inflight.discard(done)
        if not done.cancelled() and done.exception() is None:
            self.cache.put(key, done.result())
