"""What runs videos, as the routes and the healer see it: the in-process runner
(runs.RunRegistry, the embedded default) or the durable queue (queue.QueueRunner)."""

from __future__ import annotations

from typing import Protocol

from gateway.video_run import Scene, VideoRun


class Runner(Protocol):
    async def start(
        self,
        video_id: str,
        scenes: list[Scene],
        regenerate: frozenset[int] = frozenset(),
        owner: str = "",
        heal: bool = False,
    ) -> tuple[VideoRun, bool]:
        """Start (or join) the video's run: (run, started). ``regenerate``: scenes made again
        even though they have a real image. Raises HTTPError 409 when the video is running
        with other scenes (or another regenerate), 429 when no more can wait, 404 when it is
        another user's (``owner``: the signed-in user; "" for an operator)."""
        ...

    def waiting(self, video_id: str) -> tuple[int, str] | None:
        """A video waiting its turn in this process: its 1-based place in the line and the
        user who started it (None: not waiting here)."""
        ...

    async def health(self) -> dict[str, str]:
        """What it runs on beyond the three services, by name, for /readyz ("SERVING" when
        it answers): the queue's database with RUNS=queue; nothing in process."""
        ...

    async def drain(self, grace: float) -> None:
        """On shutdown: let runs finish within the grace."""
        ...
