"""The event streams' watch: a write's answer is published without a read, and answers that
come back out of order never move a follower backwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from gateway.answers import status_json
from gateway.auth import Caller
from gateway.draining import until_cut
from gateway.events import VideoEvents
from gateway.pushed import sse_stream
from gateway.status_reader import Seen
from storyshort.status.v1 import status_pb2
from tests.conftest import eventually


def video(progress: int, at_ms: int, status: str = "generating_images") -> status_pb2.Video:
    return status_pb2.Video(video_id="v1", status=status, progress=progress, updated_at_ms=at_ms)


def shape(v: status_pb2.Video) -> Seen:
    return Seen(status_json(status_pb2.GetVideoResponse(video=v), "http://gw"), v.owner)


async def test_write_answers_are_published_in_order_without_a_read() -> None:
    reads: list[str] = []

    async def read(video_id: str) -> Seen:
        reads.append(video_id)
        return shape(video(10, 1_000))

    events = VideoEvents(read, shape=shape, poll_every=60)
    seen: list[tuple[str, int]] = []
    following = asyncio.Event()

    async def follow() -> None:
        async for answer in events.follow("v1", first=shape(video(10, 1_000))):
            assert answer is not None
            seen.append((answer.body["status"], answer.body["progress"]))
            following.set()

    follower = asyncio.ensure_future(follow())
    await asyncio.wait_for(following.wait(), 5)
    published: list[int] = []
    for v in (video(50, 2_000), video(40, 1_900), video(40, 2_000), video(60, 2_000)):
        # An earlier write answered late (40 at 1.9 s), and one of the same moment with less
        # progress (40 at 2.0 s), are dropped: the watch's answer never goes back.
        events.changed("v1", v)
        published.append(events._watches["v1"].answer.body["progress"])  # type: ignore[union-attr]
    events.changed("v1", video(100, 3_000, "assets_generated"))
    await asyncio.wait_for(follower, 5)
    assert published == [50, 50, 50, 60]
    assert seen[-1] == ("assets_generated", 100)
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and 40 not in progress
    assert reads == [], "every change came with its answer"


async def test_without_the_written_video_the_watch_reads_at_once() -> None:
    answers = iter([shape(video(30, 2_000)), shape(video(100, 3_000, "assets_generated"))])
    reads: list[str] = []

    async def read(video_id: str) -> Seen:
        reads.append(video_id)
        return next(answers)

    events = VideoEvents(read, shape=shape, poll_every=60)  # a poll would take a minute
    seen: list[int] = []

    async def follow() -> None:
        async for answer in events.follow("v1", first=shape(video(0, 1_000))):
            assert answer is not None
            seen.append(answer.body["progress"])
            events.changed("v1")

    await asyncio.wait_for(follow(), 5)
    assert seen == [0, 30, 100] and len(reads) == 2


async def frames(stream: AsyncIterator[str]) -> list[str]:
    return [frame async for frame in stream]


def events(out: list[str]) -> list[str]:
    """The stream's events (and comments), whatever writes carried them."""
    return [block + "\n\n" for block in "".join(out).split("\n\n") if block]


async def never_read(video_id: str) -> Seen:
    """For a watch that is never told of a change (and polls only after a minute)."""
    raise AssertionError(f"{video_id} was read: nothing announced a change")


async def answers(*items: Seen | None) -> AsyncGenerator[Seen | None, None]:
    for item in items:
        yield item


async def test_a_stream_ends_saying_why_when_an_answer_is_not_the_callers() -> None:
    alice = Caller("alice")
    mine, theirs = Seen(shape(video(10, 1)).body, "alice"), Seen(shape(video(20, 2)).body, "bob")
    unknown = Seen(shape(video(30, 3)).body, None)
    out = await frames(sse_stream("v1", answers(mine, theirs, mine), alice))
    assert [f.split("\n")[0] for f in out[1:]] == ["event: status", "event: end"]
    assert '"reason":"NOT_FOUND"' in out[-1] and '"progress":20' not in "".join(out)
    out = await frames(sse_stream("v1", answers(mine, unknown), alice))
    assert '"reason":"STATUS_UNAVAILABLE"' in out[-1] and '"progress":30' not in "".join(out)
    # An operator (no user) and users off (user "") see every answer.
    done = Seen(shape(video(100, 4, "assets_generated")).body, "bob")
    for caller in (Caller(None), Caller("")):
        out = events(await frames(sse_stream("v1", answers(mine, theirs, unknown, done), caller)))
        assert sum(f.startswith("event: status") for f in out) == 4 and out[-1] == "event: end\ndata: {}\n\n"


async def test_a_stream_ends_when_the_callers_token_expires() -> None:
    expired = Caller("alice", expires=time.time() - 1)
    mine = Seen(shape(video(10, 1)).body, "alice")
    out = await frames(sse_stream("v1", answers(None, mine), expired))
    assert "event: status" not in "".join(out) and '"reason":"TOKEN_EXPIRED"' in out[-1]


async def test_a_stream_cut_while_the_run_goes_on_closes_without_an_end() -> None:
    """A gateway shutting down cuts its streams: a follower told `end` would take the run for
    over and stop; without it, it reconnects (to another replica) and goes on."""
    operator = Caller(None)
    running, done = shape(video(40, 1)), shape(video(100, 2, "assets_generated"))
    cut = await frames(sse_stream("v1", answers(running), operator))
    assert [f.split("\n")[0] for f in cut] == ["retry: 2000", "event: status"]
    ended = await frames(sse_stream("v1", answers(running, done), operator))
    assert events(ended)[-1] == "event: end\ndata: {}\n\n"
    # The run's last answer and its `end` leave in one write: the follower has both at once.
    assert ended[-1].startswith("event: status") and ended[-1].endswith("event: end\ndata: {}\n\n")


async def test_a_stream_that_ends_with_its_run_stops_following_at_once() -> None:
    """The run's last answer ends the stream, and with it the follow (its count, its watch):
    at once, not once the collector finds the generators left behind."""

    videos = VideoEvents(never_read, shape=shape, poll_every=60)
    done = shape(video(100, 2, "assets_generated"))
    follow = until_cut(videos.follow("v1", first=done), asyncio.Event())
    out = await frames(sse_stream("v1", follow, Caller(None)))
    assert [e.split("\n")[0] for e in events(out)] == ["retry: 2000", "event: status", "event: end"]
    assert videos.followers == 0


async def test_a_stream_whose_follower_goes_away_while_it_waits_stops_following() -> None:
    """A follower that goes away mid-run (the stream's task cancelled while it waits for the
    next answer) is counted out at once: the wait is cancelled before the follow is closed
    (closing a generator that a pending wait still holds would fail)."""

    videos = VideoEvents(never_read, shape=shape, poll_every=60)
    follow = until_cut(videos.follow("v1", first=shape(video(40, 1))), asyncio.Event())
    out: list[str] = []

    async def consume() -> None:
        async for frame in sse_stream("v1", follow, Caller(None)):
            out.append(frame)

    reading = asyncio.ensure_future(consume())

    async def waiting() -> bool:
        return len(out) == 2 and videos.followers == 1

    assert await eventually(waiting, timeout=5), out
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert videos.followers == 0
