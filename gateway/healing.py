"""Healing: a video that ended with placeholders because the providers failed gets its real
images once they recover.

After a run, the scenes whose placeholder stands for provider trouble (every provider failed,
or imagegen was unreachable) are noted. After a wait (doubling per try, capped) the healer
asks imagegen whether any provider would be tried now (breaker closed or half-open); if so
it resumes the video the way a second POST does: only scenes without a real image are
generated, an image paid for already comes from imagegen's replay cache, progress never goes
back, and each healed scene gets its new versioned URL. If not, it waits for the breaker's
cooldown without spending a try. Services still never call each other: the gateway (or, with
RUNS=queue, the worker that ran the video) drives it. Pending heals live in this process's
memory (bounded): a restart forgets them, and the next POST of the video heals it as well."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import metrics
from gateway.clients import ServiceClients
from gateway.errors import CallFailed, HTTPError
from gateway.video_run import Scene, VideoRun
from gateway.vocabulary import SCENE_STORED

log = logging.getLogger("healing")
# Placeholder reasons that a later run can fix (a "budget" placeholder stays one).
HEALABLE = frozenset({"every provider failed", "imagegen unavailable"})
# Start a run of the video as a POST does; answers (run, started): not started when a run of
# the video is under way (with RUNS=queue, maybe the job that just asked for this heal).
# The heal runs as the video's owner: their own start during it joins it, and what it pays
# counts in their share of the budget.
Resume = Callable[..., Awaitable[tuple[VideoRun, bool]]]


@dataclass
class Heal:
    video_id: str
    scenes: list[Scene]
    due: float  # time.monotonic()
    owner: str = ""  # the user whose video it is ("": an operator's, or users off)


def healable_scenes(run: VideoRun) -> list[int]:
    return run.scenes_where(
        lambda o: o.result.state == SCENE_STORED and o.result.placeholder and o.result.error in HEALABLE
    )


class Healer:
    def __init__(
        self,
        clients: ServiceClients,
        *,
        first_wait: float,
        max_wait: float,
        max_tries: int,
        max_videos: int = 10_000,
    ) -> None:
        self.clients = clients
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.max_tries = max_tries
        self.max_videos = max_videos
        self.resume: Resume | None = None
        self.pending: dict[str, Heal] = {}
        self._tries: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def consider(self, run: VideoRun) -> None:
        """After a run: note its healable placeholders (or forget the video when none)."""
        scenes = healable_scenes(run)
        if not scenes or self.max_tries == 0 or self.resume is None:
            self._tries.pop(run.video_id, None)
            self.pending.pop(run.video_id, None)
            return
        tries = self._tries.get(run.video_id, 0)
        if tries >= self.max_tries:
            log.warning(
                "placeholders not healed after the last try; a new POST of the video tries again",
                extra={"video_id": run.video_id, "scenes": scenes, "tries": tries},
            )
            metrics.HEALS.labels("given_up").inc()
            self._tries.pop(run.video_id, None)
            return
        if run.video_id not in self.pending and len(self.pending) >= self.max_videos:
            log.warning("too many videos waiting to heal; this one is not", extra={"video_id": run.video_id})
            return
        wait = min(self.first_wait * 2**tries, self.max_wait)
        self.pending[run.video_id] = Heal(run.video_id, run.scenes, time.monotonic() + wait, run.owner)
        log.info(
            "placeholders will be healed when the providers answer again",
            extra={"video_id": run.video_id, "scenes": scenes, "in_s": wait, "try": tries + 1},
        )
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="healer")
        self._wake.set()

    async def _run(self) -> None:
        while self.pending:
            heal = min(self.pending.values(), key=lambda h: h.due)
            left = heal.due - time.monotonic()
            if left > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    pass
                continue
            del self.pending[heal.video_id]
            wait = await self._until_providers_answer()
            if wait is None:
                log.warning("no provider could heal the video; not trying", extra={"video_id": heal.video_id})
                self._tries.pop(heal.video_id, None)
            elif wait > 0:  # not a try: wait for a breaker's cooldown (or imagegen's return)
                heal.due = time.monotonic() + wait
                self.pending.setdefault(heal.video_id, heal)
            else:
                await self._start(heal)

    async def _start(self, heal: Heal) -> None:
        assert self.resume is not None
        try:
            _run, started = await self.resume(heal.video_id, heal.scenes, owner=heal.owner, heal=True)
            if not started:  # a run is under way; its end decides anew
                heal.due = time.monotonic() + self.first_wait
                self.pending.setdefault(heal.video_id, heal)
                return
            self._tries[heal.video_id] = self._tries.get(heal.video_id, 0) + 1
            metrics.HEALS.labels("started").inc()
            log.info("resumed the video to heal its placeholders", extra={"video_id": heal.video_id})
        except HTTPError as exc:
            if exc.status == 429:  # no room to run it now: later, without spending a try
                heal.due = time.monotonic() + max(float(exc.headers.get("Retry-After", 1)), self.first_wait)
                self.pending.setdefault(heal.video_id, heal)
            elif exc.status >= 500:  # the queue's database did not answer: an outage, later
                self._later(heal, exc)
            else:  # its scenes changed since: the newer run is the one that counts
                log.info("heal dropped", extra={"video_id": heal.video_id, "reason": exc.message})
                self._tries.pop(heal.video_id, None)
        except Exception as exc:
            self._later(heal, exc)

    def _later(self, heal: Heal, exc: Exception) -> None:
        log.warning(
            "could not resume the video to heal it; trying later", extra={"video_id": heal.video_id, "error": str(exc)}
        )
        heal.due = time.monotonic() + min(self.first_wait * 2 ** self._tries.get(heal.video_id, 0), self.max_wait)
        self.pending.setdefault(heal.video_id, heal)

    async def _until_providers_answer(self) -> float | None:
        """0 when a real provider would be tried now; else seconds until one might (None:
        the chain has no real provider that could)."""
        try:
            answer = await self.clients.list_providers()
        except CallFailed:
            return max(self.first_wait, 1.0)
        real = [p for p in answer.providers if p.kind != "placeholder" and p.available]
        if not real:
            return None
        if any(p.breaker_state != "open" for p in real):
            return 0.0
        # A breaker's probe is due then; a little later, so the probe is this heal's call.
        return min(p.retry_in_ms for p in real) / 1000 + 0.05

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
