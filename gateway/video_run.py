"""A video run's data: its scenes, what became of each, its summary, and the bookkeeping
the pipeline and the reporter share."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gateway.spool import Pending
from services.common.summary import RunSummary
from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.status.v1 import status_pb2

GATEWAY_PLACEHOLDER = "gateway-placeholder"


@dataclass(frozen=True)
class Scene:
    number: int  # 1-based
    prompt: str


@dataclass
class SceneOutcome:
    result: status_pb2.SceneResult
    reported: bool = False
    settles: str = ""  # the spend hold the report releases


class InFlight:
    """Calls under way, and a wait for the moment there are none."""

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self._count += 1
        self._none.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._none.set()

    async def idle(self) -> None:
        await self._none.wait()


def new_run(video_id: str, scenes: list[Scene], regenerate: frozenset[int] = frozenset(), owner: str = "") -> VideoRun:
    """A run; a regenerate gets its own variant (a new image, not the one already paid for)."""
    variant = uuid.uuid4().hex[:16] if regenerate else ""
    return VideoRun(video_id, scenes, regenerate=regenerate, variant=variant, owner=owner)


@dataclass
class VideoRun:
    video_id: str
    scenes: list[Scene]
    summary: RunSummary = field(default_factory=RunSummary)
    outcomes: dict[int, SceneOutcome] = field(default_factory=dict)
    # What earlier runs of this video spent (from the status store).
    spent_before: float = 0.0
    started: float = 0.0  # time.monotonic() when the run began
    left: int = 0  # scenes of this run not finished yet
    # The final status, once recorded with the last scene's report.
    final: str | None = None
    reporting: InFlight = field(default_factory=InFlight)
    pending: Pending | None = None  # what earlier runs left in the spool, as prepare() found it
    queued: bool = False  # waiting for its turn to run (in-process admission)
    # Scenes stored as placeholders by earlier runs: a real image for one of them heals it.
    placeholders_before: set[int] = field(default_factory=set)
    # Scenes to generate again even though they have a real image (a regenerate), and the
    # variant that asks imagegen for a new image rather than the one it already made.
    regenerate: frozenset[int] = frozenset()
    variant: str = ""
    # Real images of regenerated scenes whose prompt did not change: kept when the new
    # attempt ends in a placeholder (a provider outage never replaces a real image).
    kept: dict[int, status_pb2.SceneResult] = field(default_factory=dict)
    # The signed-in user who started it ("": an operator, or users off).
    owner: str = ""
    # Its start was counted against the owner's limits when it was let into the line.
    counted: bool = False

    @property
    def fingerprint(self) -> tuple[tuple[tuple[int, str], ...], tuple[int, ...]]:
        return tuple((s.number, s.prompt) for s in self.scenes), tuple(sorted(self.regenerate))

    def scenes_where(self, predicate: Callable[[SceneOutcome], bool]) -> list[int]:
        return [n for n, o in sorted(self.outcomes.items()) if predicate(o)]


@dataclass(frozen=True)
class Stages:
    generating: asyncio.Semaphore
    storing: asyncio.Semaphore


def placeholder_reason(answer: imagegen_pb2.GenerateResponse) -> str:
    if any(a.reason.startswith("budget") for a in answer.attempts):
        return "budget"
    if not answer.attempts:
        return "no provider configured"
    return "every provider failed"
