"""Progress pushed: status answers for whoever follows a video (the event stream, and a POST
with `Prefer: wait`).

One watch per followed video in this gateway, however many follow it: it publishes the
status answer of every write this process makes (the video as the write answered it: the
runs of RUNS=inprocess; no read needed), and reads it every `poll_every` seconds otherwise
(writes by other replicas and by queue workers, which all go to the status service), and
hands each new answer to every follower. Writes may answer out of order (concurrent scenes):
an answer older than the one published (by its update time, then its progress) is dropped. A
follower holds only its place in the sequence of answers, so a slow one skips to the
latest instead of queueing what it missed. A watch ends when the video is no longer
running, or when its last follower leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from gateway import metrics
from gateway.answers import is_running
from gateway.status_reader import Seen
from storyshort.status.v1 import status_pb2

log = logging.getLogger("events")
Read = Callable[[str], Awaitable[Seen]]
Shape = Callable[[status_pb2.Video], Seen]


@dataclass(eq=False)
class Watch:
    video_id: str
    followers: int = 0
    answer: Seen | None = None
    version: int = 0
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    nudged: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def publish(self, answer: Seen, ended: bool) -> None:
        self.answer, self.ended = answer, ended
        self.version += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


def _older(a: Seen, b: Seen) -> bool:
    """Answer ``a`` tells an earlier moment of the video than ``b``."""
    return (a.body.get("updatedAtMs") or 0, a.body["progress"]) < (b.body.get("updatedAtMs") or 0, b.body["progress"])


def _same(a: Seen | None, b: Seen) -> bool:
    """Two answers tell the same story (the age of a degraded answer does not count)."""
    if a is None or a.owner != b.owner:
        return False
    return {k: v for k, v in a.body.items() if k != "ageMs"} == {k: v for k, v in b.body.items() if k != "ageMs"}


class VideoEvents:
    def __init__(
        self, read: Read, *, shape: Shape | None = None, poll_every: float = 1.0, max_followers: int = 10_000
    ) -> None:
        self.read = read
        self.shape = shape
        self.poll_every = poll_every
        self.max_followers = max_followers
        self.followers = 0
        self._watches: dict[str, Watch] = {}

    def changed(self, video_id: str, video: status_pb2.Video | None = None) -> None:
        """This process wrote the video's status: publish the write's answer (``video``),
        or read it now, not at the next poll."""
        watch = self._watches.get(video_id)
        if watch is None:
            return
        if video is None or self.shape is None:
            watch.nudged.set()
            return
        answer = self.shape(video)
        if watch.answer is not None and (_older(answer, watch.answer) or _same(watch.answer, answer)):
            return
        metrics.EVENTS_PUBLISHED.inc()
        watch.publish(answer, ended=not is_running(answer.body))

    @property
    def full(self) -> bool:
        return self.followers >= self.max_followers

    async def follow(
        self, video_id: str, first: Seen | None = None, heartbeat: float | None = None
    ) -> AsyncGenerator[Seen | None, None]:
        """Each new status answer of the video (with its owner: the follower checks it is
        theirs), the current one first, until it is no longer running; None every
        ``heartbeat`` seconds without one. ``first``: the answer the caller has just read
        (saves a read)."""
        watch = self._watches.get(video_id)
        if watch is None:
            watch = self._watches[video_id] = Watch(video_id)
            if first is not None:
                watch.publish(first, not is_running(first.body))
            watch.task = asyncio.create_task(self._watch(watch), name=f"watch-{video_id}")
        watch.followers += 1
        self.followers += 1
        metrics.EVENT_FOLLOWERS.set(self.followers)
        seen = 0
        try:
            while True:
                if watch.version > seen and watch.answer is not None:
                    seen = watch.version
                    yield watch.answer
                    if watch.ended:
                        return
                    continue
                if watch.ended or (watch.task is not None and watch.task.done()):
                    return  # the watch stopped (the video is gone, or shutdown)
                try:
                    async with asyncio.timeout(heartbeat):
                        await watch.changed.wait()
                except TimeoutError:
                    yield None
        finally:
            watch.followers -= 1
            self.followers -= 1
            metrics.EVENT_FOLLOWERS.set(self.followers)
            if not watch.followers and self._watches.get(video_id) is watch:
                del self._watches[video_id]
                if watch.task is not None:
                    watch.task.cancel()

    async def _watch(self, watch: Watch) -> None:
        while not watch.ended:
            if watch.answer is not None:
                # Until told of a change, or the next poll.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.nudged.wait(), self.poll_every)
            watch.nudged.clear()
            try:
                answer = await self.read(watch.video_id)
            except Exception as exc:  # the video is gone, or its id refused: the stream ends
                log.info("watch ended", extra={"video_id": watch.video_id, "error": str(exc)})
                watch.ended = True
                watch.changed.set()
                return
            if not _same(watch.answer, answer):
                metrics.EVENTS_PUBLISHED.inc()
                watch.publish(answer, ended=not is_running(answer.body))

    async def close(self) -> None:
        watches = list(self._watches.values())
        for watch in watches:
            if watch.task is not None:
                watch.task.cancel()
        for watch in watches:
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
            watch.ended = True
            watch.changed.set()
