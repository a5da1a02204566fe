"""One run per video: a second start of a running video joins it instead of starting
another; a start with different scenes is refused. A finished or failed video resumes,
regenerating only the scenes that have no real image yet."""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import scenes_conflict
from gateway.healing import Healer
from gateway.pipeline import Pipeline, Scene, VideoRun

log = logging.getLogger("runs")


class RunRegistry:
    """The in-process runner (the embedded default): runs live in this gateway's memory."""

    def __init__(self, pipeline: Pipeline, healer: Healer | None = None) -> None:
        self.pipeline = pipeline
        self.healer = healer
        if healer is not None:
            healer.resume = self.start
        self.running: dict[str, VideoRun] = {}
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._lock = asyncio.Lock()

    async def start(self, video_id: str, scenes: list[Scene]) -> tuple[VideoRun, bool]:
        """Answer (run, started): started is False when the video was already running."""
        run = VideoRun(video_id, scenes)
        async with self._lock:
            current = self.running.get(video_id)
            if current is not None:
                if current.fingerprint != run.fingerprint:
                    raise scenes_conflict(video_id)
                return current, False
            self.running[video_id] = run
        try:
            done = await self.pipeline.prepare(run)
        except BaseException:
            self.running.pop(video_id, None)
            raise
        task = asyncio.create_task(self.pipeline.run(run, done), name=f"video-{video_id}")
        self._tasks[video_id] = task
        task.add_done_callback(lambda _t: self._finished(run))
        return run, True

    def _finished(self, run: VideoRun) -> None:
        self.running.pop(run.video_id, None)
        task = self._tasks.pop(run.video_id, None)
        if task is None or task.cancelled():
            return
        if task.exception() is not None:
            log.error("video run crashed", extra={"video_id": run.video_id}, exc_info=task.exception())
        elif self.healer is not None:
            self.healer.consider(run)

    async def drain(self, grace: float) -> None:
        """On shutdown: let runs finish within the grace, then cancel what is left."""
        if self.healer is not None:
            await self.healer.close()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
