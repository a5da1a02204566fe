"""Video runs as durable jobs on procrastinate, on the PostgreSQL that already holds status.

Why procrastinate: it keeps jobs in PostgreSQL (no new server to run), locks a job per
video across every replica (`lock`), refuses a second queued job for the same video
(`queueing_lock`), and workers send heartbeats, so the job of a killed worker can be found
and retried. A retried run regenerates only scenes without a stored image, and imagegen's
replay cache answers images already paid for.

`POST` (any gateway replica) marks the video generating and enqueues; `python -m
gateway.worker` (any number of replicas) runs the jobs."""

from __future__ import annotations

import logging
from typing import Any, cast

from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.types import JSONValue
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from gateway.errors import scenes_conflict, video_not_found
from gateway.healing import Healer
from gateway.pipeline import Pipeline
from gateway.video_run import Scene, VideoRun, new_run
from gateway.vocabulary import FINAL

log = logging.getLogger("queue")
TASK = "storyshort.run_video"
ACTIVE = ("todo", "doing")
FINISHED = FINAL


def queue_app(database_url: str) -> App:
    """The procrastinate app of this process (one per gateway or worker), with the task."""
    jobs = App(connector=PsycopgConnector(conninfo=database_url))
    jobs.task(name=TASK, pass_context=True, retry=RetryStrategy(max_attempts=10, wait=2))(run_video)
    return jobs


def scenes_arg(scenes: list[Scene]) -> list[list[Any]]:
    return [[s.number, s.prompt] for s in scenes]


async def run_video(
    context: JobContext,
    video_id: str,
    scenes: list[list[Any]],
    regenerate: list[int] | None = None,
    variant: str = "",
    owner: str = "",
) -> str:
    pipeline: Pipeline = context.additional_context["pipeline"]
    again = frozenset(int(n) for n in regenerate or ())
    run = VideoRun(video_id, [Scene(int(n), str(p)) for n, p in scenes], regenerate=again, variant=variant, owner=owner)
    log.info("run started", extra={"video_id": video_id, "job_id": context.job.id if context.job else None})
    done = await pipeline.prepare(run, count_start=False)  # the gateway counted it at POST
    final = await pipeline.run(run, done)
    healer: Healer | None = context.additional_context.get("healer")
    if healer is not None:
        healer.consider(run)  # a heal is enqueued like a POST, and any worker runs it
    return final


async def ensure_schema(queue_app: App) -> None:
    """Apply procrastinate's schema once (it is not idempotent by itself)."""
    found = await queue_app.connector.execute_query_one_async(
        "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
    )
    if not found["present"]:
        await queue_app.connector.execute_query_async("SELECT pg_advisory_lock(7410264)")
        try:
            again = await queue_app.connector.execute_query_one_async(
                "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
            )
            if not again["present"]:
                await queue_app.schema_manager.apply_schema_async()
                log.info("procrastinate schema applied")
        finally:
            await queue_app.connector.execute_query_async("SELECT pg_advisory_unlock(7410264)")


class QueueRunner:
    """The gateway side: one queued or running job per video, across all replicas."""

    def __init__(self, pipeline: Pipeline, jobs: App, database_url: str) -> None:
        self.pipeline = pipeline
        self.app = jobs
        # For the per-video advisory lock that makes check-then-enqueue atomic across replicas.
        self.locks: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
        )

    async def open(self) -> None:
        await self.locks.open()

    async def start(
        self,
        video_id: str,
        scenes: list[Scene],
        regenerate: frozenset[int] = frozenset(),
        owner: str = "",
        heal: bool = False,
    ) -> tuple[VideoRun, bool]:
        key = f"storyshort-run:{video_id}"
        async with self.locks.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                run = new_run(video_id, scenes, regenerate, owner)
                run.counted = heal  # a heal is the owner's, but not counted against their limits
                return await self._start_locked(run)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    async def _start_locked(self, run: VideoRun) -> tuple[VideoRun, bool]:
        video_id = run.video_id
        wanted = scenes_arg(run.scenes)
        again = sorted(run.regenerate)
        for status in ACTIVE:
            for job in await self.app.job_manager.list_jobs_async(lock=video_id, status=status, task=TASK):
                if run.owner and job.task_kwargs.get("owner", "") != run.owner:
                    raise video_not_found(video_id)
                if status == "doing" and await self._finishing(video_id):
                    continue  # its run has ended; the new job waits on the video's lock for it
                if job.task_kwargs.get("scenes") != wanted or (job.task_kwargs.get("regenerate") or []) != again:
                    raise scenes_conflict(video_id)
                return run, False
        await self.pipeline.prepare(run)  # status answers generating at once; errors surface here
        try:
            await self.app.configure_task(TASK, lock=video_id, queueing_lock=video_id).defer_async(
                video_id=video_id,
                scenes=cast("JSONValue", wanted),
                regenerate=cast("JSONValue", again),
                variant=run.variant,
                owner=run.owner,
            )
        except AlreadyEnqueued:
            return run, False  # another replica enqueued it a moment ago
        return run, True

    async def _finishing(self, video_id: str) -> bool:
        """A running job whose video already reads finished (or failed) has written its
        final status and is returning: the user sees the run over, so a new start is not
        refused for it."""
        try:
            video = await self.pipeline.clients.get_video(video_id)
        except Exception:
            return False  # status unknown: the job counts as running
        return not video.degraded and video.video.status in FINISHED

    def waiting(self, video_id: str) -> tuple[int, str] | None:
        """Queued jobs wait in PostgreSQL and read as generating (StartVideo ran at POST)."""
        return None

    async def drain(self, grace: float) -> None:
        await self.locks.close()  # jobs live in PostgreSQL; nothing else to hand over
