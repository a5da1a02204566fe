"""Admission in the in-process runner, against a stand-in pipeline whose runs end when the
test says so: at most `max_running` videos run, the rest wait in order, a full line is a
429 with Retry-After, and a finished run lets the next one in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest

from gateway.errors import HTTPError
from gateway.pipeline import Pipeline
from gateway.runs import RunRegistry
from gateway.video_run import Scene, VideoRun
from tests.conftest import eventually


class StandInPipeline:
    """prepare() answers at once; run() lasts until the test releases the video."""

    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def admit(self, run: VideoRun) -> None:
        run.counted = bool(run.owner)

    async def prepare(self, run: VideoRun) -> set[int]:
        self.prepared.append(run.video_id)
        return set()

    async def run(self, run: VideoRun, done: set[int]) -> str:
        self.started.append(run.video_id)
        gate = self.release.setdefault(run.video_id, asyncio.Event())
        await gate.wait()
        return "assets_generated"

    def finish(self, video_id: str) -> None:
        self.release.setdefault(video_id, asyncio.Event()).set()


async def until(check: Callable[[], bool]) -> bool:
    async def holds() -> bool:
        return check()

    return await eventually(holds, timeout=5)


def scenes(word: str = "a fox") -> list[Scene]:
    return [Scene(1, word), Scene(2, word + " again")]


def registry(pipeline: StandInPipeline, **limits: Any) -> RunRegistry:
    return RunRegistry(cast(Pipeline, pipeline), **limits)


async def test_at_most_max_running_run_and_the_rest_wait_in_order() -> None:
    pipeline = StandInPipeline()
    runs = registry(pipeline, max_running=2, max_waiting=5)
    answers = [await runs.start(f"v{i}", scenes()) for i in range(5)]
    assert [run.queued for run, _started in answers] == [False, False, True, True, True]
    assert all(started for _run, started in answers)
    assert await until(lambda: len(pipeline.started) == 2)
    assert [(runs.waiting(f"v{i}") or (None,))[0] for i in range(5)] == [None, None, 1, 2, 3]
    pipeline.finish("v0")
    assert await until(lambda: pipeline.started == ["v0", "v1", "v2"])
    assert runs.waiting("v3") == (1, "") and runs.waiting("v2") is None
    for video in ("v1", "v2", "v3", "v4"):
        pipeline.finish(video)
    assert await until(lambda: not runs.running and not runs.line)
    assert pipeline.started == ["v0", "v1", "v2", "v3", "v4"]  # in the order they were posted


async def test_a_full_line_is_429_with_retry_after_and_nothing_is_started() -> None:
    pipeline = StandInPipeline()
    runs = registry(pipeline, max_running=1, max_waiting=1)
    await runs.start("v0", scenes())
    await runs.start("v1", scenes())
    with pytest.raises(HTTPError) as refused:
        await runs.start("v2", scenes())
    assert refused.value.status == 429 and refused.value.code == "RESOURCE_EXHAUSTED"
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert "v2" not in pipeline.prepared and runs.waiting("v2") is None
    pipeline.finish("v0")
    pipeline.finish("v1")


async def test_the_line_is_bounded_by_the_bytes_of_its_prompts() -> None:
    pipeline = StandInPipeline()
    runs = registry(pipeline, max_running=1, max_waiting=100, max_waiting_bytes=1000)
    await runs.start("v0", scenes())
    await runs.start("v1", [Scene(1, "x" * 900)])
    with pytest.raises(HTTPError):
        await runs.start("v2", [Scene(1, "y" * 200)])
    pipeline.finish("v0")
    assert await until(lambda: "v1" in pipeline.started)
    await runs.start("v2", [Scene(1, "y" * 200)])  # room again once v1 left the line
    pipeline.finish("v1")
    pipeline.finish("v2")


async def test_a_second_start_of_a_waiting_video_joins_it_and_other_scenes_conflict() -> None:
    pipeline = StandInPipeline()
    runs = registry(pipeline, max_running=1)
    await runs.start("v0", scenes())
    first, _ = await runs.start("v1", scenes())
    again, started = await runs.start("v1", scenes())
    assert again is first and not started
    with pytest.raises(HTTPError) as conflict:
        await runs.start("v1", scenes("a heron"))
    assert conflict.value.status == 409
    pipeline.finish("v0")
    pipeline.finish("v1")


async def test_a_heal_that_finds_the_line_full_waits_instead_of_being_dropped() -> None:
    from gateway.healing import Heal, Healer

    pipeline = StandInPipeline()
    runs = registry(pipeline, max_running=1, max_waiting=0)
    await runs.start("busy", scenes())
    healer = Healer(cast(Any, None), first_wait=0.01, max_wait=1.0, max_tries=3)
    healer.resume = runs.start
    heal = Heal("v-heal", scenes(), due=0.0)
    await healer._start(heal)
    assert "v-heal" in healer.pending  # kept for later, no try spent
    assert healer._tries.get("v-heal", 0) == 0
    pipeline.finish("busy")


class CountingPipeline(StandInPipeline):
    """Counts each signed-in user's starts as the status store does, with a limit per user;
    refuses a start at its turn when told to."""

    def __init__(self, per_user: int) -> None:
        super().__init__()
        self.per_user = per_user
        self.counted: dict[str, int] = {}
        self.admitted: list[str] = []
        self.refuse_at_turn: set[str] = set()
        self.failed: dict[str, str] = {}

    def _count(self, run: VideoRun) -> None:
        if not run.owner:
            return
        if self.counted.get(run.owner, 0) >= self.per_user:
            raise HTTPError(429, "RESOURCE_EXHAUSTED", f"{run.owner} started {self.per_user} videos this hour")
        self.counted[run.owner] = self.counted.get(run.owner, 0) + 1

    async def admit(self, run: VideoRun) -> None:
        self._count(run)
        self.admitted.append(run.video_id)
        run.counted = True

    async def prepare(self, run: VideoRun) -> set[int]:
        if run.video_id in self.refuse_at_turn:
            from gateway.errors import ServiceRefused

            raise ServiceRefused("status", grpc.StatusCode.FAILED_PRECONDITION, "the store refused the start")
        if not run.counted:
            self._count(run)
        return await super().prepare(run)

    async def refused(self, run: VideoRun, reason: str) -> None:
        self.failed[run.video_id] = reason


async def test_a_users_waiting_starts_count_against_their_limits_at_admission() -> None:
    """USER_VIDEOS_PER_HOUR=1, one running, three may wait: the user's further starts are
    refused at once (they once waited, took the whole line, and vanished at their turn)."""
    pipeline = CountingPipeline(per_user=1)
    runs = registry(pipeline, max_running=1, max_waiting=3)
    await runs.start("a-1", scenes(), owner="alice")
    for video in ("a-2", "a-3", "a-4"):
        with pytest.raises(HTTPError) as refused:
            await runs.start(video, scenes(), owner="alice")
        assert refused.value.status == 429
    assert not runs.line, "nothing waits for a start that was refused"
    run, started = await runs.start("b-1", scenes(), owner="bob")  # the line has room for others
    assert started and run.queued and runs.waiting("b-1") == (1, "bob")
    pipeline.finish("a-1")
    assert await until(lambda: "b-1" in pipeline.started)
    assert pipeline.counted == {"alice": 1, "bob": 1}, "bob's start was counted once, at admission"
    pipeline.finish("b-1")


async def test_one_user_cannot_fill_the_line() -> None:
    pipeline = CountingPipeline(per_user=100)
    runs = registry(pipeline, max_running=1, max_waiting=10, max_waiting_per_user=2)
    await runs.start("busy", scenes())
    for video in ("a-1", "a-2"):
        await runs.start(video, scenes(), owner="alice")
    with pytest.raises(HTTPError) as refused:
        await runs.start("a-3", scenes(), owner="alice")
    assert refused.value.status == 429 and "MAX_WAITING_PER_USER" in refused.value.message
    assert refused.value.headers["Retry-After"]
    assert "a-3" not in pipeline.admitted, "nothing is written for a refused start"
    run, _ = await runs.start("b-1", scenes(), owner="bob")
    assert run.queued and runs.waiting("b-1") == (3, "bob")
    for video in ("busy", "a-1", "a-2", "b-1"):
        pipeline.finish(video)


async def test_a_start_refused_at_its_turn_ends_as_failed_not_vanished() -> None:
    pipeline = CountingPipeline(per_user=100)
    pipeline.refuse_at_turn.add("a-1")
    runs = registry(pipeline, max_running=1, max_waiting=10)
    await runs.start("busy", scenes())
    await runs.start("a-1", scenes(), owner="alice")
    pipeline.finish("busy")
    assert await until(lambda: "a-1" in pipeline.failed)
    assert "the store refused the start" in pipeline.failed["a-1"]
    assert "a-1" not in pipeline.started and not runs.line and not runs.running


async def test_a_heal_runs_as_the_videos_owner_and_is_not_counted_against_them() -> None:
    """A heal once ran as no one's: the owner's own start during it answered 404, and what
    it paid fell outside the owner's share of the budget."""
    from gateway.healing import Heal, Healer

    pipeline = CountingPipeline(per_user=1)
    runs = registry(pipeline, max_running=2)
    healer = Healer(cast(Any, None), first_wait=0.01, max_wait=1.0, max_tries=3)
    healer.resume = runs.start
    await healer._start(Heal("alices", scenes(), due=0.0, owner="alice"))
    assert runs.running["alices"].owner == "alice"
    assert pipeline.counted == {}, "the heal is not one of her starts"
    joined, started = await runs.start("alices", scenes(), owner="alice")  # her own start joins it
    assert joined is runs.running["alices"] and not started
    with pytest.raises(HTTPError) as stranger:
        await runs.start("alices", scenes(), owner="bob")
    assert stranger.value.status == 404
    pipeline.finish("alices")
