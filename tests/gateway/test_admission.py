"""Admission in the in-process runner, against a stand-in pipeline whose runs end when the
test says so: at most `max_running` videos run, the rest wait in order, a full line is a
429 with Retry-After, and a finished run lets the next one in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

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
    assert [runs.position(f"v{i}") for i in range(5)] == [None, None, 1, 2, 3]
    pipeline.finish("v0")
    assert await until(lambda: pipeline.started == ["v0", "v1", "v2"])
    assert runs.position("v3") == 1 and runs.position("v2") is None
    for video in ("v1", "v2", "v3", "v4"):
        pipeline.finish(video)
    assert await until(lambda: not runs.running and not runs.waiting)
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
    assert "v2" not in pipeline.prepared and runs.position("v2") is None
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
