"""Video runs as durable jobs on procrastinate, on the PostgreSQL that already holds status.

Why procrastinate: it keeps jobs in PostgreSQL (no new server to run), locks a job per
video across every replica (`lock`), refuses a second queued job for the same video
(`queueing_lock`), and workers send heartbeats, so the job of a killed worker can be found
and retried. A retried run regenerates only scenes without a stored image, and imagegen's
replay cache answers images already paid for.

`POST` (any gateway replica) marks the video generating and enqueues; `python -m
gateway.worker` (any number of replicas) runs the jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import psycopg
from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.types import JSONValue
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from gateway.clients import HEALTH_TIMEOUT
from gateway.errors import HTTPError, scenes_conflict, video_not_found
from gateway.healing import Healer
from gateway.pipeline import Pipeline
from gateway.video_run import Scene, VideoRun, new_run
from gateway.vocabulary import FINAL
from services.common.deadlines import Limit, within

log = logging.getLogger("queue")
TASK = "storyshort.run_video"
ACTIVE = ("todo", "doing")
FINISHED = FINAL
QUEUE_RETRY_AFTER = 5  # seconds, on a 503 for a queue that did not answer
SCHEMA_CONNECT_TIMEOUT = 10  # seconds
# What the queue's database refusing or failing raises (a pool's timeout is an OperationalError).
DATABASE_ERRORS = (psycopg.Error, ConnectorException)


def queue_unavailable(why: str) -> HTTPError:
    """A start the queue's database could not take: nothing was enqueued (or, cut after the
    enqueue, the same POST again finds the job and answers alreadyRunning)."""
    return HTTPError(
        503,
        "UNAVAILABLE",
        f"the run queue's database {why}; the video was not started: try again",
        headers={"Retry-After": str(QUEUE_RETRY_AFTER)},
        reason="QUEUE_UNAVAILABLE",
    )


def queue_app(database_url: str) -> App:
    """The procrastinate app of this process (one per gateway or worker), with the task."""
    jobs = App(connector=PsycopgConnector(conninfo=database_url))
    jobs.task(name=TASK, pass_context=True, retry=RetryStrategy(max_attempts=10, wait=2))(run_video)
    return jobs


def queue_pool(database_url: str) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """The pool procrastinate would make for itself, to be opened without waiting for the
    database (procrastinate's own waits up to 30 s for it, then fails the start)."""
    return AsyncConnectionPool(database_url, open=False, check=AsyncConnectionPool.check_connection)


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


async def ensure_schema(queue_app: App, database_url: str) -> None:
    """Apply procrastinate's schema once (it is not idempotent by itself), whoever starts
    first. Check, lock, check again and apply all on one connection of its own: a session's
    advisory lock taken through procrastinate's pool stayed on whichever pooled connection
    took it (the unlock went to another), for the life of the process, and a replica starting
    on a fresh database beside it waited for it. Closing the connection releases it in any case."""
    # A database that does not answer at all ends this (a worker's start; the gateway's task
    # that its starts wait for) within SCHEMA_CONNECT_TIMEOUT, to be tried again.
    async with await AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=SCHEMA_CONNECT_TIMEOUT
    ) as conn:
        if await _has_schema(conn):
            return
        await conn.execute("SELECT pg_advisory_lock(7410264)")
        if not await _has_schema(conn):
            await conn.execute(queue_app.schema_manager.get_schema())
            log.info("procrastinate schema applied")
        await conn.execute("SELECT pg_advisory_unlock(7410264)")


async def _has_schema(conn: AsyncConnection[Any]) -> bool:
    found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
    return bool(found and found[0])


def _schema_made(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:  # the next start tries again
        log.warning("procrastinate's schema could not be made yet", extra={"error": repr(exc)})


class QueueRunner:
    """The gateway side: one queued or running job per video, across all replicas."""

    def __init__(self, pipeline: Pipeline, jobs: App, database_url: str, timeout: float = 5.0) -> None:
        self.pipeline = pipeline
        self.app = jobs
        self.timeout = timeout  # one start's queue work: the lock, the video's jobs, the enqueue
        self.database_url = database_url
        self.schema_ready = False  # procrastinate's tables seen (or made): ensured by the first start
        self._schema: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[str] | None = None  # /readyz's query, one at a time
        # For the per-video advisory lock that makes check-then-enqueue atomic across replicas.
        self.locks: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
        )

    async def open(self) -> None:
        """Open the pool without waiting for the database, and make sure of the schema if
        the database answers within ``timeout``: a gateway starts, and serves reads, while
        its queue's database is down; its starts answer 503 until it is back."""
        await self.locks.open(wait=False)
        try:
            await within(self.timeout, self._ensure_schema())
        except (TimeoutError, *DATABASE_ERRORS) as exc:
            log.error(
                "the queue's database does not answer; starts of videos answer 503 until it does",
                extra={"error": repr(exc) if not isinstance(exc, TimeoutError) else f"no answer in {self.timeout:g} s"},
            )

    async def _ensure_schema(self) -> None:
        """Wait for the schema to be there. Making it is a task of its own, never cut with
        the start that waits for it: on a slow database making procrastinate's schema can
        take longer than QUEUE_TIMEOUT, and cut each time it would never be made."""
        if self.schema_ready:
            return
        if self._schema is None or self._schema.done():
            self._schema = asyncio.create_task(self._make_schema(), name="queue-schema")
            self._schema.add_done_callback(_schema_made)
        await asyncio.shield(self._schema)

    async def _make_schema(self) -> None:
        await ensure_schema(self.app, self.database_url)
        self.schema_ready = True

    async def start(
        self,
        video_id: str,
        scenes: list[Scene],
        regenerate: frozenset[int] = frozenset(),
        owner: str = "",
        heal: bool = False,
    ) -> tuple[VideoRun, bool]:
        """Enqueue the video's run unless it is queued or running (then that run, False).
        Within ``timeout``: a queue database that refuses or does not answer is a 503
        (QUEUE_UNAVAILABLE), and the cut work ends on its own (psycopg may take seconds to
        give up a query on a connection that hangs). The status service's part of a start
        (the video marked generating, a running job's video read) has its own deadline and
        its own errors, and its time is not the queue's: a frozen status service was cut
        as the queue's database not answering (a 503 that blamed the wrong part, and the
        gateway's status breaker never heard of it)."""
        limit = Limit(self.timeout)
        try:
            return await limit.run(self._start(video_id, scenes, regenerate, owner, heal, limit))
        except TimeoutError:
            log.warning("the queue's database did not answer", extra={"video_id": video_id, "timeout_s": self.timeout})
            raise queue_unavailable(f"did not answer within {self.timeout:g} s (QUEUE_TIMEOUT)") from None
        except DATABASE_ERRORS as exc:
            log.warning("the queue's database failed", extra={"video_id": video_id, "error": repr(exc)})
            raise queue_unavailable("is unavailable") from exc

    async def _start(
        self, video_id: str, scenes: list[Scene], regenerate: frozenset[int], owner: str, heal: bool, limit: Limit
    ) -> tuple[VideoRun, bool]:
        await self._ensure_schema()
        key = f"storyshort-run:{video_id}"
        # The transaction's lock, released when it ends however it ends (commit, rollback, the
        # connection lost). A session's lock, taken by a start cut before its unlock (the
        # lock's answer late on a slow network), stayed on its pooled connection, and every
        # later start of the video waited on it.
        async with self.locks.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            run = new_run(video_id, scenes, regenerate, owner)
            run.counted = heal  # a heal is the owner's, but not counted against their limits
            return await self._start_locked(run, limit)

    async def _start_locked(self, run: VideoRun, limit: Limit) -> tuple[VideoRun, bool]:
        video_id = run.video_id
        wanted = scenes_arg(run.scenes)
        again = sorted(run.regenerate)
        for status in ACTIVE:
            for job in await self.app.job_manager.list_jobs_async(lock=video_id, status=status, task=TASK):
                if run.owner and job.task_kwargs.get("owner", "") != run.owner:
                    raise video_not_found(video_id)
                if status == "doing" and await self._finishing(video_id, limit):
                    continue  # its run has ended; the new job waits on the video's lock for it
                if job.task_kwargs.get("scenes") != wanted or (job.task_kwargs.get("regenerate") or []) != again:
                    raise scenes_conflict(video_id)
                return run, False
        with limit.paused():  # status answers generating at once; its errors surface here
            await self.pipeline.prepare(run)
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

    async def _finishing(self, video_id: str, limit: Limit) -> bool:
        """A running job whose video already reads finished (or failed) has written its
        final status and is returning: the user sees the run over, so a new start is not
        refused for it."""
        try:
            with limit.paused():
                video = await self.pipeline.clients.get_video(video_id)
        except Exception:
            return False  # status unknown: the job counts as running
        return not video.degraded and video.video.status in FINISHED

    async def health(self) -> dict[str, str]:
        """/readyz's entry for the queue's database: SERVING when a query through the
        starts' pool answers within HEALTH_TIMEOUT, else UNAVAILABLE (refused, failed) or
        DEADLINE_EXCEEDED (no answer). Starts answer 503 meanwhile, so the gateway is not
        ready. One query at a time, whoever asks: a load balancer polling a database that
        hangs waits on the query already out instead of adding one per poll to the pool."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._query(), name="queue-health")
        try:
            return {"queue": await within(HEALTH_TIMEOUT, asyncio.shield(self._probe))}
        except TimeoutError:
            return {"queue": "DEADLINE_EXCEEDED"}

    async def _query(self) -> str:
        """One round trip on a pooled connection, cut after ``timeout`` (what a start may
        take), so a connection that never answers holds the next probe back no longer. No
        connection to be had within half of HEALTH_TIMEOUT (the pool cannot connect) is
        UNAVAILABLE."""

        async def select_one() -> None:
            async with self.locks.connection(timeout=HEALTH_TIMEOUT / 2) as conn:
                await conn.execute("SELECT 1")

        try:
            await within(self.timeout, select_one())
        except TimeoutError:
            return "DEADLINE_EXCEEDED"
        except DATABASE_ERRORS:
            return "UNAVAILABLE"
        return "SERVING"

    def waiting(self, video_id: str) -> tuple[int, str] | None:
        """Queued jobs wait in PostgreSQL and read as generating (StartVideo ran at POST)."""
        return None

    async def drain(self, grace: float) -> None:
        for task in (self._schema, self._probe):
            if task is not None:
                task.cancel()
        await self.locks.close()  # jobs live in PostgreSQL; nothing else to hand over
