"""The in-process runner (the embedded default): video runs live in this gateway's memory.

One run per video: a second start of a running (or waiting) video joins it instead of
starting another; a start with different scenes is refused. A finished or failed video
resumes, regenerating only the scenes that have no real image yet.

Admission: at most `max_running` videos run at once, so the pipeline never starves the
status routes that share this process. More wait their turn in order (answered 202,
`queued`), in a line bounded by count and by the bytes of their prompts; when it is full,
a start is answered 429 with a Retry-After."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine
from typing import Any

from gateway import metrics
from gateway.breakers import ServiceRefused, is_down
from gateway.errors import HTTPError, scenes_conflict, video_not_found
from gateway.healing import Healer
from gateway.pipeline import Pipeline
from gateway.video_run import Scene, VideoRun, new_run
from services.common.retry import retrying_within

log = logging.getLogger("runs")
# How long a waiting video's start keeps trying to mark it generating when status is down.
START_WRITES = 30.0


class RunRegistry:
    def __init__(
        self,
        pipeline: Pipeline,
        healer: Healer | None = None,
        *,
        max_running: int = 4,
        max_waiting: int = 1000,
        max_waiting_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.pipeline = pipeline
        self.healer = healer
        if healer is not None:
            healer.resume = self.start
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self.running: dict[str, VideoRun] = {}
        self.waiting: OrderedDict[str, VideoRun] = OrderedDict()
        self._waiting_bytes = 0
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._lock = asyncio.Lock()
        self._durations: deque[float] = deque(maxlen=20)  # recent runs' seconds, for Retry-After
        self._publish()

    async def start(
        self, video_id: str, scenes: list[Scene], regenerate: frozenset[int] = frozenset(), owner: str = ""
    ) -> tuple[VideoRun, bool]:
        """Answer (run, started): started is False when the video was already running or
        waiting. A run that has to wait is answered with ``run.queued`` set."""
        run = new_run(video_id, scenes, regenerate, owner)
        async with self._lock:
            current = self.running.get(video_id) or self.waiting.get(video_id)
            if current is not None:
                if owner and current.owner != owner:
                    raise video_not_found(video_id)
                if current.fingerprint != run.fingerprint:
                    raise scenes_conflict(video_id)
                return current, False
            if len(self.running) >= self.max_running:
                self._wait(run)
                return run, True
            self.running[video_id] = run
            self._publish()
        try:
            done = await self.pipeline.prepare(run)
        except BaseException:
            self.running.pop(video_id, None)
            self._publish()
            raise
        self._launch(run, self.pipeline.run(run, done))
        return run, True

    def position(self, video_id: str, owner: str = "") -> int | None:
        """1-based place of a waiting video in the line (None: not waiting, or another
        user's than ``owner``)."""
        for place, (waiting, run) in enumerate(self.waiting.items(), start=1):
            if waiting == video_id:
                return place if not owner or run.owner == owner else None
        return None

    def _wait(self, run: VideoRun) -> None:
        size = sum(len(s.prompt.encode()) for s in run.scenes)
        if len(self.waiting) >= self.max_waiting or self._waiting_bytes + size > self.max_waiting_bytes:
            metrics.ADMISSIONS.labels("refused").inc()
            retry_after = self._retry_after()
            raise HTTPError(
                429,
                "RESOURCE_EXHAUSTED",
                f"{len(self.running)} videos are running and {len(self.waiting)} waiting, the most this gateway "
                f"takes; post again in about {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        run.queued = True
        self.waiting[run.video_id] = run
        self._waiting_bytes += size
        metrics.ADMISSIONS.labels("queued").inc()
        self._publish()

    def _retry_after(self) -> int:
        """About when a place in the line frees up: a typical run's time per running slot."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 10.0
        return max(1, round(typical / max(self.max_running, 1)))

    def _launch(self, run: VideoRun, work: Coroutine[Any, Any, str]) -> None:
        started = time.monotonic()
        task = asyncio.create_task(work, name=f"video-{run.video_id}")
        self._tasks[run.video_id] = task
        task.add_done_callback(lambda _t: self._finished(run, time.monotonic() - started))

    async def _start_waiting(self, run: VideoRun) -> str:
        """A video's turn: mark it generating (retried while status is down), then run it. A
        start the status service refuses now (a user's limit reached while it waited) is
        not run; the refusal is logged."""
        try:
            async for attempt in retrying_within(START_WRITES, is_down):
                with attempt:
                    done = await self.pipeline.prepare(run)
        except ServiceRefused as exc:
            log.warning(
                "a waiting video's start was refused when its turn came",
                extra={"video_id": run.video_id, "code": exc.code.name, "error": exc.details},
            )
            return "refused"
        return await self.pipeline.run(run, done)

    def _finished(self, run: VideoRun, seconds: float) -> None:
        self.running.pop(run.video_id, None)
        task = self._tasks.pop(run.video_id, None)
        self._durations.append(seconds)
        if task is not None and not task.cancelled():
            if task.exception() is not None:
                log.error("video run crashed", extra={"video_id": run.video_id}, exc_info=task.exception())
            elif self.healer is not None:
                self.healer.consider(run)
        self._next()

    def _next(self) -> None:
        while self.waiting and len(self.running) < self.max_running:
            _video_id, run = self.waiting.popitem(last=False)
            self._waiting_bytes -= sum(len(s.prompt.encode()) for s in run.scenes)
            run.queued = False
            self.running[run.video_id] = run
            self._launch(run, self._start_waiting(run))
        self._publish()

    def _publish(self) -> None:
        metrics.VIDEOS.labels("running").set(len(self.running))
        metrics.VIDEOS.labels("waiting").set(len(self.waiting))

    async def drain(self, grace: float) -> None:
        """On shutdown: let runs finish within the grace, then cancel what is left (videos
        still waiting are not started; a new POST starts them)."""
        if self.healer is not None:
            await self.healer.close()
        self.waiting.clear()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
