"""Starting a video in queue mode (RUNS=queue) on the real PostgreSQL and procrastinate,
against a stand-in pipeline whose status store says what the test sets.

A job that has written its video's final status is still "doing" until its worker returns:
a start in that moment is a new run (it waits on the video's lock for the old job), never
a 409 for a run the user already sees finished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from procrastinate import App

from gateway.errors import HTTPError
from gateway.pipeline import Pipeline
from gateway.queue import TASK, QueueRunner, ensure_schema, queue_app
from gateway.video_run import Scene, VideoRun
from storyshort.status.v1 import status_pb2

pytestmark = pytest.mark.postgres


class StatusSaying:
    """The status client's get_video, answering the status the test sets."""

    def __init__(self) -> None:
        self.status = "generating_images"

    async def get_video(self, video_id: str) -> status_pb2.GetVideoResponse:
        return status_pb2.GetVideoResponse(video=status_pb2.Video(video_id=video_id, status=self.status))


class StandInPipeline:
    def __init__(self) -> None:
        self.clients = StatusSaying()
        self.prepared: list[str] = []

    async def prepare(self, run: VideoRun) -> set[int]:
        self.prepared.append(run.video_id)
        return set()


def scenes(word: str) -> list[Scene]:
    return [Scene(n, f"{word} {n}") for n in (1, 2)]


@pytest.fixture
async def runner(pg_dsn: str) -> AsyncIterator[tuple[QueueRunner, StandInPipeline, App]]:
    jobs = queue_app(pg_dsn)
    async with jobs.open_async():
        await ensure_schema(jobs)
        pipeline = StandInPipeline()
        runner = QueueRunner(cast(Pipeline, pipeline), jobs, pg_dsn)
        await runner.open()
        try:
            yield runner, pipeline, jobs
        finally:
            await runner.drain(1.0)


async def take(jobs: App) -> Any:
    """What a worker does first: take the job, marking it "doing"."""
    worker = await jobs.job_manager.register_worker()
    return await jobs.job_manager.fetch_job(queues=None, worker_id=worker)


async def jobs_of(jobs: App, status: str) -> list[Any]:
    return list(await jobs.job_manager.list_jobs_async(lock="v1", status=status, task=TASK))


async def test_a_running_job_refuses_other_scenes_until_its_video_reads_finished(
    runner: tuple[QueueRunner, StandInPipeline, App],
) -> None:
    start, pipeline, jobs = runner
    _, started = await start.start("v1", scenes("first"))
    assert started
    assert await take(jobs) is not None
    assert await jobs_of(jobs, "doing")

    _, again = await start.start("v1", scenes("first"))
    assert not again  # the same scenes join the running job
    with pytest.raises(HTTPError) as refused:
        await start.start("v1", scenes("other"))
    assert refused.value.status == 409

    for final in ("assets_generated", "failed"):
        pipeline.clients.status = final  # the job wrote its final status and is returning
        _, renewed = await start.start("v1", scenes(f"after {final}"))
        assert renewed, final
        queued = await jobs_of(jobs, "todo")
        assert len(queued) == 1 and queued[0].task_kwargs["scenes"][0][1] == f"after {final} 1"
        await jobs.job_manager.cancel_job_by_id_async(queued[0].id, delete_job=True)
    assert pipeline.prepared == ["v1", "v1", "v1"]  # each new run marked generating at once


async def test_a_running_job_counts_as_running_when_status_cannot_say(
    runner: tuple[QueueRunner, StandInPipeline, App],
) -> None:
    start, pipeline, jobs = runner
    await start.start("v1", scenes("first"))
    assert await take(jobs) is not None

    async def down(video_id: str) -> status_pb2.GetVideoResponse:
        raise ConnectionError("status is down")

    pipeline.clients.get_video = down  # type: ignore[method-assign]
    with pytest.raises(HTTPError) as refused:
        await start.start("v1", scenes("other"))
    assert refused.value.status == 409
