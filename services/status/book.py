"""The status logic between the servicer and a store: per-attempt timeouts and retries
inside the caller's deadline, degraded answers instead of errors for reads, a breaker that
answers at once while the store is down, and recovery of inconsistent videos.

(Over 300 lines: every operation here goes through the same guard, breaker and memory of
last answers, and reads best beside them.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from services.common.deadlines import Deadline, within
from services.common.errors import NotFound, Unavailable
from services.common.retry import STATUS_READ_BACKOFF, RetryPolicy, retrying
from services.status import metrics
from services.status.model import (
    ASSETS_GENERATED,
    GENERATING,
    PROCESSING,
    Hold,
    HoldRequest,
    SceneResult,
    Spend,
    UserLimits,
    Video,
    VideoUpdate,
    now_ms,
)
from services.status.stores.base import StatusStore, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

ANSWER_MARGIN = 0.05
READ_POLICY = RetryPolicy(attempts=3, backoff=STATUS_READ_BACKOFF, min_attempt=0.05, retry_on=(StoreUnavailable,))
WRITE_POLICY = READ_POLICY


@dataclass(frozen=True)
class StatusAnswer:
    video: Video
    degraded: bool = False
    age_ms: int = 0
    reason: str = ""
    stalled: bool = False


class StoreBreaker:
    """Opens after `threshold` failures in a row; while open, reads answer degraded without
    touching the store. Every `probe_every` seconds one probe (in the background, never
    inside a caller's request) tries the store and closes the breaker when it answers."""

    def __init__(self, store: str, threshold: int = 3, probe_every: float = 2.0) -> None:
        self.store = store
        self.threshold = threshold
        self.probe_every = probe_every
        self.failures = 0
        self.opened_at: float | None = None
        self.next_probe = 0.0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def probe_due(self) -> bool:
        now = time.monotonic()
        if self.opened_at is not None and now >= self.next_probe:
            self.next_probe = now + self.probe_every
            return True
        return False

    def success(self) -> None:
        if self.opened_at is not None:
            log.info("store answered again; breaker closed", extra={"store": self.store})
        self.failures, self.opened_at = 0, None
        metrics.BREAKER_OPEN.labels(self.store).set(0)

    def failure(self) -> None:
        self.failures += 1
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.next_probe = self.opened_at + self.probe_every
            metrics.BREAKER_OPEN.labels(self.store).set(1)
            log.error("store keeps failing; answering degraded until it recovers", extra={"store": self.store})


class StatusBook:
    def __init__(
        self,
        store: StatusStore,
        *,
        attempt_timeout: float = 5.0,
        stall_after: float = 600.0,
        recover_after: float = 30.0,
        breaker: StoreBreaker | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self.attempt_timeout = attempt_timeout
        self.stall_after_ms = int(stall_after * 1000)
        # A live run writes its own final status (with its summary) right after its last
        # scene; only a video left at 100% for this long is corrected by a read.
        self.recover_after_ms = int(recover_after * 1000)
        self.breaker = breaker or StoreBreaker(store.name)
        self._known: OrderedDict[str, tuple[Video, float]] = OrderedDict()
        self._probe: asyncio.Task[None] | None = None
        self._cache_size = cache_size

    def _remember(self, video: Video) -> Video:
        self._known[video.video_id] = (video, time.monotonic())
        self._known.move_to_end(video.video_id)
        while len(self._known) > self._cache_size:
            self._known.popitem(last=False)
        return video

    async def _call(self, op: str, deadline: Deadline, policy: RetryPolicy, work: Callable[[], Awaitable[T]]) -> T:
        async for attempt in retrying(policy, deadline):
            with attempt:
                # A little is kept back so a degraded answer still reaches the caller in time.
                timeout = deadline.slice(self.attempt_timeout, reserve=ANSWER_MARGIN)
                started = time.monotonic()
                try:
                    # Not asyncio.timeout: a cut attempt's client may take seconds to end it
                    # (psycopg cancelling a query on a connection that no longer answers).
                    return await within(timeout, work())
                except TimeoutError as exc:
                    metrics.STORE_ERRORS.labels(self.store.name, op).inc()
                    raise StoreUnavailable(f"{self.store.name} did not answer within {timeout:.2f} s") from exc
                except StoreUnavailable:
                    metrics.STORE_ERRORS.labels(self.store.name, op).inc()
                    raise
                finally:
                    metrics.STORE_SECONDS.labels(self.store.name, op).observe(time.monotonic() - started)
        raise AssertionError("unreachable: retrying re-raises the last failure")

    async def _guarded(self, op: str, deadline: Deadline, policy: RetryPolicy, work: Callable[[], Awaitable[T]]) -> T:
        """A store call that must succeed for its caller: its failure counts toward the
        breaker and is answered UNAVAILABLE; its success closes the breaker."""
        try:
            result = await self._call(op, deadline, policy, work)
        except StoreUnavailable as exc:
            self.breaker.failure()
            raise Unavailable(f"status store unavailable: {exc}") from exc
        self.breaker.success()
        return result

    async def _write(self, op: str, deadline: Deadline, work: Callable[[], Awaitable[Video]]) -> Video:
        return self._remember(await self._guarded(op, deadline, WRITE_POLICY, work))

    async def create(self, video_id: str, scene_count: int, deadline: Deadline, owner: str = "") -> Video:
        return await self._write("create", deadline, lambda: self.store.create(video_id, scene_count, owner))

    async def start(
        self,
        video_id: str,
        scene_count: int,
        deadline: Deadline,
        prompts: dict[int, str] | None = None,
        owner: str = "",
        limits: UserLimits | None = None,
    ) -> Video:
        """Create the video if need be and mark it generating (a run begins), keeping the
        run's prompts when given. With an ``owner``: someone else's video is NOT_FOUND (as
        one that does not exist), and the start counts against the user's ``limits``
        (LimitReached, nothing written, when over one)."""
        await self.admit(video_id, scene_count, deadline, owner, limits)
        change = VideoUpdate(status=GENERATING, scene_count=scene_count, error="", prompts=prompts or None)
        return await self.update(video_id, change, deadline)

    async def admit(
        self, video_id: str, scene_count: int, deadline: Deadline, owner: str = "", limits: UserLimits | None = None
    ) -> Video:
        """A start's checks and count, and the video created (a draft) if it does not exist:
        with an ``owner``, someone else's video is NOT_FOUND and the start counts against the
        user's ``limits`` (LimitReached, nothing written, when over one). Its status stays."""
        if owner:
            current = await self._guarded("get", deadline, READ_POLICY, lambda: self.store.get(video_id))
            # Another user's, or an operator's run: not this user's. A video nobody has started
            # yet (the app's own row, no owner column) is claimed by its first start.
            if current is not None and current.owner != owner and (current.owner or current.updated_at_ms):
                raise NotFound(f"video {video_id!r} does not exist")
            if limits is not None and limits.any:
                await self._guarded(
                    "record_start",
                    deadline,
                    WRITE_POLICY,
                    lambda: self.store.record_start(owner, video_id, scene_count, limits),
                )
        video = await self.create(video_id, scene_count, deadline, owner)
        if owner and video.owner not in ("", owner):  # another user created it a moment ago
            raise NotFound(f"video {video_id!r} does not exist")
        return video

    async def update(self, video_id: str, change: VideoUpdate, deadline: Deadline) -> Video:
        return await self._write("update", deadline, lambda: self.store.update(video_id, change))

    async def report_scene(
        self,
        video_id: str,
        scene: SceneResult,
        deadline: Deadline,
        then: VideoUpdate | None = None,
        settles: str = "",
    ) -> Video:
        """Record the scene (and its cost) and drop the spend hold it was paid under
        (``settles``): a retried report drops nothing twice (a hold is gone once). ``then``
        (the run's end) is written with it, in the same transaction where the store has one."""
        return await self._write(
            "report_scene", deadline, lambda: self.store.report_scene(video_id, scene, settles, then)
        )

    async def report_preview(self, video_id: str, scene: int, url: str, index: int, deadline: Deadline) -> Video:
        return await self._write(
            "report_preview", deadline, lambda: self.store.report_preview(video_id, scene, url, index)
        )

    async def reserve_spend(self, request: HoldRequest, deadline: Deadline) -> Hold:
        """Idempotent per reservation id, so retried like a read."""
        return await self._guarded("reserve_spend", deadline, WRITE_POLICY, lambda: self.store.reserve_spend(request))

    async def release_spend(self, reservation_id: str, deadline: Deadline) -> bool:
        return await self._guarded(
            "release_spend", deadline, WRITE_POLICY, lambda: self.store.release_spend(reservation_id)
        )

    async def get(self, video_id: str, deadline: Deadline) -> StatusAnswer:
        if self.breaker.is_open:
            if self.breaker.probe_due() and self._probe is None:
                self._probe = asyncio.create_task(self._probe_store(video_id))
            return self._degraded(video_id, "store breaker open")
        try:
            video = await self._call("get", deadline, READ_POLICY, lambda: self.store.get(video_id))
        except StoreUnavailable as exc:
            self.breaker.failure()
            return self._degraded(video_id, str(exc))
        self.breaker.success()
        if video is None:
            self._known.pop(video_id, None)
            raise NotFound(f"video {video_id!r} does not exist")
        video = await self._recover(video, deadline)
        return StatusAnswer(self._remember(video), stalled=self._is_stalled(video))

    async def _probe_store(self, video_id: str) -> None:
        """One attempt against the store; closes the breaker when it answers."""
        try:
            video = await within(self.attempt_timeout, self.store.get(video_id))
        except (StoreUnavailable, TimeoutError):
            metrics.STORE_ERRORS.labels(self.store.name, "probe").inc()
            return
        except Exception:
            log.exception("store probe failed")
            return
        finally:
            self._probe = None
        self.breaker.success()
        if video is not None:
            self._remember(video)

    async def _recover(self, video: Video, deadline: Deadline) -> Video:
        """A video at 100% still marked generating is corrected to assets_generated."""
        if video.status != GENERATING or video.progress < 100:
            return video
        if now_ms() - video.updated_at_ms < self.recover_after_ms:
            return video
        if video.scene_count and sum(1 for s in video.scenes if s.state == "stored") < video.scene_count:
            return video
        log.warning("video at 100% still generating; corrected to assets_generated", extra={"video_id": video.video_id})
        metrics.CORRECTIONS.inc()
        try:
            return await self._call(
                "update",
                deadline,
                WRITE_POLICY,
                lambda: self.store.update(video.video_id, VideoUpdate(status=ASSETS_GENERATED)),
            )
        except Exception as exc:  # the read already succeeded: answer it
            log.warning("could not correct video status", extra={"video_id": video.video_id, "error": str(exc)})
            return video

    def _is_stalled(self, video: Video) -> bool:
        return video.status == GENERATING and now_ms() - video.updated_at_ms > self.stall_after_ms

    def _degraded(self, video_id: str, reason: str) -> StatusAnswer:
        known = self._known.get(video_id)
        if known is not None:
            video, seen = known
            metrics.DEGRADED.labels("last_known").inc()
            return StatusAnswer(video, True, int((time.monotonic() - seen) * 1000), reason)
        metrics.DEGRADED.labels("unknown").inc()
        return StatusAnswer(Video(video_id=video_id, status=PROCESSING), True, 0, reason)

    async def spend_since(self, since_ms: int, deadline: Deadline, owner: str = "") -> Spend:
        try:
            return await self._call("spend", deadline, READ_POLICY, lambda: self.store.spend_since(since_ms, owner))
        except StoreUnavailable as exc:
            raise Unavailable(f"status store unavailable: {exc}") from exc

    async def watch_stalled(self, every: float) -> None:
        """Keep the stalled-videos gauge current (for the alert), until cancelled."""
        while True:
            try:
                metrics.STALLED.set(len(await self.list_stalled(Deadline.of(self.attempt_timeout))))
            except Unavailable:
                pass  # the breaker and the degraded counter already tell this story
            await asyncio.sleep(every)

    async def list_stalled(self, deadline: Deadline) -> list[Video]:
        try:
            return await self._call(
                "list_stalled", deadline, READ_POLICY, lambda: self.store.list_stalled(now_ms() - self.stall_after_ms)
            )
        except StoreUnavailable as exc:
            raise Unavailable(f"status store unavailable: {exc}") from exc
