"""The in-process runner (the embedded default): video runs live in this gateway's memory.

One run per video: a second start of a running (or waiting) video joins it instead of
starting another; a start with different scenes is refused. A finished or failed video
resumes, regenerating only the scenes that have no real image yet.

Admission: at most `max_running` videos run at once, so the pipeline never starves the
status routes that share this process. More wait their turn in order (answered 202,
`queued`), in a line bounded by count, by the bytes of their prompts and by each user's
share of it; when it is full, a start is answered 429 with a Retry-After. A signed-in
user's waiting start counts against their limits when it is let into the line, as one that
runs at once does; one the status service refuses when its turn comes ends as failed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine
from typing import Any

from gateway import metrics
from gateway.errors import CallFailed, HTTPError, ServiceRefused, is_down, scenes_conflict, video_not_found
from gateway.healing import Healer
from gateway.pipeline import Pipeline
from gateway.video_run import Scene, VideoRun, new_run
from gateway.vocabulary import FAILED
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
        max_waiting_per_user: int = 0,
    ) -> None:
        self.pipeline = pipeline
        self.healer = healer
        if healer is not None:
            healer.resume = self.start
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self.max_waiting_per_user = max_waiting_per_user  # 0: no share
        self.running: dict[str, VideoRun] = {}
        self.line: OrderedDict[str, VideoRun] = OrderedDict()  # videos waiting their turn, in order
        self._waiting_bytes = 0
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._lock = asyncio.Lock()
        self._durations: deque[float] = deque(maxlen=20)  # recent runs' seconds, for Retry-After
        self._publish()

    async def start(
        self,
        video_id: str,
        scenes: list[Scene],
        regenerate: frozenset[int] = frozenset(),
        owner: str = "",
        heal: bool = False,
    ) -> tuple[VideoRun, bool]:
        """Answer (run, started): started is False when the video was already running or
        waiting. A run that has to wait is answered with ``run.queued`` set. A ``heal`` runs
        as the owner's but is not counted against their limits (they did not start it)."""
        run = new_run(video_id, scenes, regenerate, owner)
        run.counted = heal
        async with self._lock:
            current = self.running.get(video_id) or self.line.get(video_id)
            if current is not None:
                if owner and current.owner != owner:
                    raise video_not_found(video_id)
                if current.fingerprint != run.fingerprint:
                    raise scenes_conflict(video_id)
                return current, False
            if len(self.running) >= self.max_running:
                self._check_room(run)  # a full line refuses before anything is written
                await self.pipeline.admit(run)  # the user's limits count now, not at its turn
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

    def waiting(self, video_id: str) -> tuple[int, str] | None:
        """A waiting video's 1-based place in the line and its owner (None: not waiting)."""
        for place, (waiting, run) in enumerate(self.line.items(), start=1):
            if waiting == video_id:
                return place, run.owner
        return None

    def _check_room(self, run: VideoRun) -> None:
        """429 with a Retry-After when the line is full (videos, bytes of prompts) or the
        user already has their share of it waiting."""
        size = sum(len(s.prompt.encode()) for s in run.scenes)
        mine = sum(1 for waiting in self.line.values() if run.owner and waiting.owner == run.owner)
        if len(self.line) >= self.max_waiting or self._waiting_bytes + size > self.max_waiting_bytes:
            why = f"{len(self.running)} videos are running and {len(self.line)} waiting, the most this gateway takes"
        elif self.max_waiting_per_user and mine >= self.max_waiting_per_user:
            why = f"you have {mine} videos waiting to start, the most one user may (MAX_WAITING_PER_USER)"
        else:
            return
        metrics.ADMISSIONS.labels("refused").inc()
        retry_after = self._retry_after()
        raise HTTPError(
            429,
            "RESOURCE_EXHAUSTED",
            f"{why}; post again in about {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    def _wait(self, run: VideoRun) -> None:
        run.queued = True
        self.line[run.video_id] = run
        self._waiting_bytes += sum(len(s.prompt.encode()) for s in run.scenes)
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
        start the status service refuses now is not run, and ends visibly: the video is
        marked failed with the reason (unless it is someone else's now: not a word to it)."""
        try:
            async for attempt in retrying_within(START_WRITES, is_down):
                with attempt:
                    done = await self.pipeline.prepare(run)
        except CallFailed as exc:
            log.warning(
                "a waiting video's start was refused when its turn came",
                extra={"video_id": run.video_id, "code": exc.code.name, "error": exc.details},
            )
            if not (isinstance(exc, ServiceRefused) and exc.not_found):
                await self.pipeline.refused(run, f"the start could not begin when its turn came: {exc.details}")
            return FAILED
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
        while self.line and len(self.running) < self.max_running:
            _video_id, run = self.line.popitem(last=False)
            self._waiting_bytes -= sum(len(s.prompt.encode()) for s in run.scenes)
            run.queued = False
            self.running[run.video_id] = run
            self._launch(run, self._start_waiting(run))
        self._publish()

    def _publish(self) -> None:
        metrics.VIDEOS.labels("running").set(len(self.running))
        metrics.VIDEOS.labels("waiting").set(len(self.line))

    async def health(self) -> dict[str, str]:
        return {}  # runs live in this process: nothing more to answer for

    async def drain(self, grace: float) -> None:
        """On shutdown: let runs finish within the grace, then cancel what is left (videos
        still waiting are not started; a new POST starts them)."""
        if self.healer is not None:
            await self.healer.close()
        self.line.clear()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
