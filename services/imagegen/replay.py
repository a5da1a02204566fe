"""Images already paid for, answered again instead of bought again.

When a caller dies after imagegen paid for an image (a worker killed mid-run, a gateway
restarted), the retried scene asks for the same image. A bounded in-memory cache keyed by
(video, scene, prompt, size, quality) answers it without a second provider request. An
image that arrived after the chain stopped waiting for it is kept the same way, so the
scene's next call (a resume, a heal) gets it without paying again. It is per process: with
several imagegen replicas a retry may land on another one: with IMAGEGEN_SHARED_STATE the
replicas share paid images through Redis as well (shared_replay.py). Placeholders are
never cached."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from services.imagegen import metrics
from services.imagegen.providers.base import Outcome
from services.imagegen.results import AttemptRecord, ChainResult

if TYPE_CHECKING:
    from services.common.deadlines import Deadline


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


class PaidElsewhere(Protocol):
    """Paid images shared by the replicas (shared_replay.py: SharedReplay)."""

    async def get(self, key: ReplayKey) -> ChainResult | None: ...

    def put(self, key: ReplayKey | None, result: ChainResult) -> None: ...

    async def claim(self, key: ReplayKey) -> bool: ...

    def unclaim(self, key: ReplayKey) -> None: ...

    async def wait(self, key: ReplayKey, seconds: float) -> ChainResult | None: ...


class PaidImages:
    """The replay layer in front of the chain: a call whose image was already paid for is
    answered from the cache; a new call runs to the end even when its caller goes away (a
    provider charges for an image all the same), and its image, or one that arrives late,
    waits in the cache for the caller's retry."""

    def __init__(self, cache: ReplayCache, shared: PaidElsewhere | None = None, reserve: float = 0.5) -> None:
        self.cache = cache
        self.shared = shared
        self.reserve = reserve  # of a call's time, kept for the placeholder after a wait
        self._inflight: set[asyncio.Task[ChainResult]] = set()

    async def answer(
        self,
        key: ReplayKey | None,
        generate: Callable[[Callable[[ChainResult], None]], Coroutine[None, None, ChainResult]],
        deadline: Deadline,
    ) -> ChainResult:
        """The paid image again (this replica's, or any replica's with shared state); or the
        one another replica is paying for right now, once it has it; or a new one."""
        found = await self.replay(key)
        if found is not None:
            return found
        if self.shared is not None and key is not None and not await self.shared.claim(key):
            waited = await self.shared.wait(key, deadline.remaining() - self.reserve)
            if waited is not None:
                self.cache.put(key, waited)
                return self._replayed(waited)
        return await self.run(key, generate, lambda: deadline.started)

    async def replay(self, key: ReplayKey | None) -> ChainResult | None:
        """The paid image answered again at no cost, or None. Its cost is reported again:
        the run that paid never got to record it."""
        replayed = self.cache.get(key)
        if replayed is None and self.shared is not None and key is not None:
            replayed = await self.shared.get(key)
            if replayed is not None:
                self.cache.put(key, replayed)
        if replayed is None:
            return None
        return self._replayed(replayed)

    def _replayed(self, replayed: ChainResult) -> ChainResult:
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
        work = asyncio.create_task(generate(lambda late: self._store(key, late)))
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
        if not done.cancelled() and done.exception() is None and not done.result().placeholder:
            self._store(key, done.result())
        elif self.shared is not None and key is not None:
            self.shared.unclaim(key)  # nothing paid: a retry elsewhere need not wait

    def _store(self, key: ReplayKey | None, result: ChainResult) -> None:
        self.cache.put(key, result)
        if self.shared is not None:
            self.shared.put(key, result)
