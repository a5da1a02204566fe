"""Starting a video in queue mode (RUNS=queue) on the real PostgreSQL and procrastinate,
against a stand-in pipeline whose status store says what the test sets.

A job that has written its video's final status is still "doing" until its worker returns:
a start in that moment is a new run (it waits on the video's lock for the old job), never
a 409 for a run the user already sees finished."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import psycopg
import pytest
from procrastinate import App

from gateway import queue as queue_module
from gateway.clients import HEALTH_TIMEOUT
from gateway.errors import HTTPError, ServiceDown
from gateway.pipeline import Pipeline
from gateway.queue import TASK, QueueRunner, ensure_schema, queue_app
from gateway.video_run import Scene, VideoRun
from services.common import deadlines
from storyshort.status.v1 import status_pb2
from tests.conftest import eventually
from tests.fakes.tcp_proxy import FaultyProxy

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
        await ensure_schema(jobs, pg_dsn)
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


@pytest.fixture
async def proxied(pg_dsn: str) -> AsyncIterator[tuple[QueueRunner, StandInPipeline, App, FaultyProxy]]:
    """The runner and its procrastinate app on the real PostgreSQL behind a faulty proxy,
    with a 1 s QUEUE_TIMEOUT."""
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        through = proxy.dsn(pg_dsn)
        jobs = queue_app(through)
        async with jobs.open_async():
            await ensure_schema(jobs, through)
            pipeline = StandInPipeline()
            runner = QueueRunner(cast(Pipeline, pipeline), jobs, through, timeout=1.0)
            await runner.open()
            try:
                yield runner, pipeline, jobs, proxy
            finally:
                proxy.thaw()
                proxy.delay, proxy.refusing = 0.0, False
                await runner.drain(1.0)


async def refused_within(runner: QueueRunner, video_id: str, bound: float) -> HTTPError:
    started = time.monotonic()
    with pytest.raises(HTTPError) as refused:
        await runner.start(video_id, scenes("first"))
    took = time.monotonic() - started
    assert took < bound, f"the start answered after {took:.1f} s"
    return refused.value


@pytest.mark.parametrize("fault", ["frozen", "down"])
async def test_a_queue_database_that_hangs_or_is_down_answers_503_within_the_timeout(
    proxied: tuple[QueueRunner, StandInPipeline, App, FaultyProxy], fault: str
) -> None:
    """It hung without a bound (frozen) or answered 500 with the traceback in the log (down);
    now 503 QUEUE_UNAVAILABLE with Retry-After, nothing prepared nor enqueued, and the same
    start goes through once the database is back."""
    runner, pipeline, jobs, proxy = proxied
    if fault == "frozen":
        proxy.freeze()
    else:
        proxy.refusing = True
        proxy.kill_connections()
    refused = await refused_within(runner, "v1", bound=1.0 + 2.0)
    assert (refused.status, refused.reason) == (503, "QUEUE_UNAVAILABLE"), refused.message
    assert "try again" in refused.message and refused.headers["Retry-After"] == "5"
    assert pipeline.prepared == []  # the video was not marked generating
    proxy.thaw()
    proxy.refusing = False

    async def starts() -> bool:
        try:
            return (await runner.start("v1", scenes("first")))[1]
        except HTTPError as exc:
            assert exc.status == 503, exc.message  # still coming back
            return False

    assert await eventually(starts, timeout=30, every=0.2)
    assert len(await jobs_of(jobs, "todo")) == 1 and pipeline.prepared == ["v1"]


# (each chunk this late, the start cut then): the start's first round trip in flight at the
# cut (where the session's lock was taken); its second (BEGIN back at 0.8 s, the lock's query
# on its way).
CUTS = [(1.5, 1.0), pytest.param(0.4, 1.2, marks=pytest.mark.matrix)]


@pytest.mark.parametrize(("delay", "cut"), CUTS)
async def test_a_start_cut_while_its_lock_was_on_the_way_leaves_no_lock_behind(
    pg_dsn: str, proxied: tuple[QueueRunner, StandInPipeline, App, FaultyProxy], delay: float, cut: float
) -> None:
    """A start holds the video's lock only while it runs. Then every chunk is late and the
    start is cut while a query is on its way (the lock's, or one after it): the database
    answers it, and psycopg's cancel comes after. The lock must not outlive the cut start (a
    session's lock, taken by the start's first query, stayed on its pooled connection when
    the cut came before its unlock was due, and every later start of the video waited on it
    until the timeout)."""
    runner, _pipeline, _jobs, proxy = proxied

    def advisory_locks() -> int:
        with psycopg.connect(pg_dsn) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0

    assert (await runner.start("v0", scenes("first")))[1]
    assert advisory_locks() == 0  # released with the start's end

    proxy.delay, runner.timeout = delay, cut
    refused = await refused_within(runner, "v1", bound=cut + 2.0)
    assert refused.status == 503

    # The cut start ends on its own, on the same slow network: then no lock is held.
    async def cut_work_ended() -> bool:
        return not deadlines._ENDING

    assert await eventually(cut_work_ended, timeout=60, every=0.1)
    assert await asyncio.to_thread(advisory_locks) == 0
    proxy.delay = 0.0
    _, started = await runner.start("v1", scenes("first"))
    assert started


async def test_replicas_starting_at_once_on_a_fresh_database_apply_the_schema_once_and_hold_no_lock(
    pg_dsn: str,
) -> None:
    """The schema lock went through procrastinate's pool: taken on one pooled connection and
    "released" on another, it stayed held for the life of the process."""
    apps = [queue_app(pg_dsn) for _ in range(3)]
    async with apps[0].open_async(), apps[1].open_async(), apps[2].open_async():
        async with asyncio.timeout(30):
            await asyncio.gather(*(ensure_schema(app, pg_dsn) for app in apps))
        with psycopg.connect(pg_dsn) as admin:
            held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
            present = admin.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        assert held == (0,) and present == (True,)


async def test_the_schema_is_made_even_when_making_it_takes_longer_than_a_start_may(pg_dsn: str) -> None:
    """A fresh database on a slow network (each chunk 0.3 s late): making procrastinate's
    schema takes seconds, and a start may take 1. The starts meanwhile answer 503, and the
    schema's making goes on across them (cut with each start, it was never made); once the
    network is quick again, a start goes through."""
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        through = proxy.dsn(pg_dsn)
        jobs = queue_app(through)
        async with jobs.open_async():
            runner = QueueRunner(cast(Pipeline, StandInPipeline()), jobs, through, timeout=1.0)
            proxy.delay = 0.3
            try:
                await runner.open()  # cut at 1 s: the gateway starts all the same
                assert not runner.schema_ready

                async def made() -> bool:
                    try:
                        await runner.start("v1", scenes("first"))
                    except HTTPError as exc:
                        assert exc.status == 503, exc.message
                    return runner.schema_ready

                assert await eventually(made, timeout=60, every=0.2)
            finally:
                proxy.delay = 0.0
            _, started = await runner.start("v2", scenes("first"))
            assert started
            await runner.drain(1.0)


async def test_a_database_that_never_answers_does_not_hold_the_schema_making_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that takes the connection and never says a word: the schema's making (which
    starts wait for, and never cut) gives up at its connect timeout, and the next start tries
    again, instead of every start waiting on one attempt for ever."""
    monkeypatch.setattr(queue_module, "SCHEMA_CONNECT_TIMEOUT", 2)  # libpq's least
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    dsn = f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/none"
    runner = QueueRunner(cast(Pipeline, StandInPipeline()), queue_app(dsn), dsn, timeout=0.5)
    try:
        await runner.open()  # answers at 0.5 s; the making goes on
        first = runner._schema
        assert first is not None
        async with asyncio.timeout(20):
            await asyncio.wait({first})
        assert isinstance(first.exception(), psycopg.OperationalError)
        with pytest.raises(HTTPError) as refused:
            await runner.start("v1", scenes("first"))
        assert refused.value.status == 503 and runner._schema is not first  # tried again
    finally:
        await runner.drain(1.0)
        listener.close()


async def health_of(runner: QueueRunner, bound: float) -> str:
    started = time.monotonic()
    answer = (await runner.health())["queue"]
    took = time.monotonic() - started
    assert took < bound, f"/readyz's queue entry answered after {took:.1f} s"
    return answer


async def test_readiness_asks_the_queue_database_one_query_at_a_time(pg_dsn: str) -> None:
    """/readyz said ready while every start answered 503 (it never asked the queue's
    database). Now its `queue` entry: SERVING while the database answers; frozen,
    DEADLINE_EXCEEDED within HEALTH_TIMEOUT for every caller at once, all on one query (a
    load balancer polling a database that hangs must not fill the starts' pool with hung
    queries); refused, UNAVAILABLE; back, SERVING."""
    bound = HEALTH_TIMEOUT + 2.0
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        through = proxy.dsn(pg_dsn)
        jobs = queue_app(through)
        async with jobs.open_async():
            # A start's queue work may take 5 s: so may the query that /readyz waits 1 s for.
            runner = QueueRunner(cast(Pipeline, StandInPipeline()), jobs, through, timeout=5.0)
            await runner.open()
            try:
                assert await health_of(runner, bound) == "SERVING"
                proxy.freeze()
                asked = runner.locks.get_stats().get("requests_num", 0)
                answers = await asyncio.gather(*(health_of(runner, bound) for _ in range(10)))
                assert answers == ["DEADLINE_EXCEEDED"] * 10
                assert await health_of(runner, bound) == "DEADLINE_EXCEEDED"  # the query out is waited on
                assert runner.locks.get_stats().get("requests_num", 0) - asked == 1, "one query for 11 callers"
                proxy.thaw()

                async def answers_(state: str) -> bool:
                    return await health_of(runner, bound) == state

                assert await eventually(lambda: answers_("SERVING"), timeout=15, every=0.2)
                proxy.refusing = True
                proxy.kill_connections()
                assert await eventually(lambda: answers_("UNAVAILABLE"), timeout=15, every=0.2)
                proxy.refusing = False
                assert await eventually(lambda: answers_("SERVING"), timeout=30, every=0.2)
            finally:
                proxy.thaw()
                proxy.refusing = False
                await runner.drain(1.0)


class StatusTaking(StandInPipeline):
    """The status service's part of a start (the video marked generating): ``delay`` seconds,
    then ``error`` raised if one is given."""

    def __init__(self, delay: float, error: Exception | None = None) -> None:
        super().__init__()
        self.delay, self.error = delay, error

    async def prepare(self, run: VideoRun) -> set[int]:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return await super().prepare(run)


async def test_the_status_services_time_in_a_start_is_not_the_queues(pg_dsn: str) -> None:
    """A start's status call (its own deadline) counted against QUEUE_TIMEOUT: a slow status
    service was cut and answered as the queue's database not answering (503
    QUEUE_UNAVAILABLE), and the gateway's status breaker never heard of it. Now a slow
    status service's answer is waited for, and its failure is the start's error as is."""
    jobs = queue_app(pg_dsn)
    async with jobs.open_async():
        await ensure_schema(jobs, pg_dsn)
        slow = StatusTaking(delay=1.0)  # twice the queue's limit
        runner = QueueRunner(cast(Pipeline, slow), jobs, pg_dsn, timeout=0.5)
        await runner.open()
        try:
            _, started = await runner.start("v1", scenes("first"))
            assert started and slow.prepared == ["v1"] and len(await jobs_of(jobs, "todo")) == 1
            down = ServiceDown("status", grpc.StatusCode.DEADLINE_EXCEEDED, "the status service did not answer")
            runner.pipeline = cast(Pipeline, StatusTaking(delay=1.0, error=down))
            with pytest.raises(ServiceDown) as failed:
                await runner.start("v2", scenes("first"))
            assert failed.value is down  # not a 503 that blames the queue's database
        finally:
            await runner.drain(1.0)
