"""Video lanes: at most `video_parallelism` requests of one video at the providers, the rest
waiting in imagegen with their clocks stopped, and nothing paid for a call that leaves
before its turn. Proofs come from the fake's in-flight counts and request log."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from services.imagegen.providers.base import SEND_GATE, SendGate
from tests.conftest import wait_until
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B
from tests.imagegen.test_chain import Stub, outcomes, start


def scenes(imagegen: Stub, video: str, n: int, parallelism: int) -> list[Coroutine[Any, Any, Any]]:
    return [
        imagegen.generate(prompt=f"{video} scene {i}", video_id=video, scene=i, video_parallelism=parallelism)
        for i in range(1, n + 1)
    ]


async def test_a_video_has_at_most_its_parallelism_at_the_provider(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.2))
    async for imagegen in start(fake_openai):
        answers = await asyncio.gather(*scenes(imagegen, "v1", 6, 2))
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 6
        assert fake_openai.max_in_flight[A] == 2
        assert fake_openai.count(A) == 6
        assert len(imagegen.servicer.lanes) == 0  # lanes go with their last call


async def test_waiting_for_the_lane_is_not_part_of_the_attempt(fake_openai: fo.FakeOpenAI) -> None:
    # One at a time, 0.4 s each: the fourth call waits 1.2 s, longer than the 1 s an attempt
    # may take, and still gets its image (a wait counted in the attempt would be a TIMEOUT);
    # the 0.6 s between the model's latency and its limit is slack for a busy machine.
    fake_openai.script(A, fo.Ok(latency=0.4))
    async for imagegen in start(fake_openai, IMAGEGEN_ATTEMPT_TIMEOUT=1.0):
        started = time.monotonic()
        answers = await asyncio.gather(*scenes(imagegen, "v1", 4, 1))
        elapsed = time.monotonic() - started
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 4
        assert fake_openai.max_in_flight[A] == 1
        assert elapsed >= 4 * 0.4  # they did wait for each other
        assert all(a.attempts[0].duration_ms < 1000 for a in answers), [a.attempts[0].duration_ms for a in answers]


async def test_videos_do_not_share_a_lane(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai):
        await asyncio.gather(*scenes(imagegen, "v1", 2, 1), *scenes(imagegen, "v2", 2, 1))
        assert fake_openai.max_in_flight[A] == 2
        prompts = [r.body["prompt"] for r in fake_openai.generation_requests()]
        # Each video's second scene went only after its first: the first two out were one of each.
        assert {p.split()[0] for p in prompts[:2]} == {"v1", "v2"}


async def test_the_provider_limit_is_kept_while_lanes_wait(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.2))
    async for imagegen in start(fake_openai, IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 3}}):
        await asyncio.gather(*(c for v in ("v1", "v2", "v3") for c in scenes(imagegen, v, 3, 2)))
        assert fake_openai.max_in_flight[A] == 3
        assert fake_openai.count(A) == 9


async def test_a_call_whose_deadline_comes_before_its_turn_gets_the_placeholder_unsent(
    fake_openai: fo.FakeOpenAI,
) -> None:
    fake_openai.script(A, fo.Ok(latency=1.0))
    async for imagegen in start(fake_openai):
        first = asyncio.ensure_future(imagegen.generate(prompt="first", video_id="v1", scene=1, video_parallelism=1))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        started = time.monotonic()
        second = await imagegen.generate(prompt="second", video_id="v1", scene=2, video_parallelism=1, timeout=0.9)
        # An answer at all (not DEADLINE_EXCEEDED) is one within its deadline; this bound
        # only catches a call that waited for the provider's place (about 1 s) anyway.
        assert time.monotonic() - started < 5
        assert second.placeholder
        assert outcomes(second) == [(A, "TIMEOUT"), (B, "SKIPPED")]
        assert second.attempts[0].reason == "no room at the provider in time"
        assert outcomes(await first) == [(A, "SUCCESS")]
        assert [r.body["prompt"] for r in fake_openai.generation_requests()] == ["first"]


async def test_a_call_cancelled_before_its_turn_is_never_sent(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.8))
    async for imagegen in start(fake_openai):
        first = asyncio.ensure_future(imagegen.generate(prompt="first", video_id="v1", scene=1, video_parallelism=1))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        second = asyncio.ensure_future(imagegen.generate(prompt="second", video_id="v1", scene=2, video_parallelism=1))
        waiting = functools.partial(lambda lanes: lanes.users("v1") == 2, imagegen.servicer.lanes)
        assert await asyncio.to_thread(wait_until, waiting)
        second.cancel()
        assert outcomes(await first) == [(A, "SUCCESS")]
        # The lane is free for the next call: had the cancelled one taken its turn, it
        # would stand between these two.
        await imagegen.generate(prompt="third", video_id="v1", scene=3, video_parallelism=1)
        assert [r.body["prompt"] for r in fake_openai.generation_requests()] == ["first", "third"]


async def test_a_call_cancelled_after_its_turn_finishes_its_paid_work_and_the_retry_pays_nothing(
    fake_openai: fo.FakeOpenAI,
) -> None:
    """Once a request is at the provider it is paid for whatever the caller does: a call
    cancelled then (the gateway gave up, a replica's client went away) lets the request run
    to its end, and the retry of the same scene is answered from what was paid."""
    fake_openai.script(A, fo.Ok(latency=0.6))
    async for imagegen in start(fake_openai):
        call = asyncio.ensure_future(imagegen.generate(prompt="paid", video_id="v1", scene=1, video_parallelism=1))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # admitted and sent
        call.cancel()
        finished = functools.partial(lambda fake: fake.paid == ["paid"], fake_openai)
        assert await asyncio.to_thread(wait_until, finished, 5.0), "the paid request ran to its end"
        retry = await imagegen.generate(prompt="paid", video_id="v1", scene=1, video_parallelism=1)
        assert not retry.placeholder and outcomes(retry) == [(A, "SKIPPED")]
        assert "already paid" in retry.attempts[0].reason
        assert fake_openai.count(A) == 1, "the retry paid nothing"


async def test_a_call_that_leaves_before_its_turn_gives_back_no_place_it_never_held(
    fake_openai: fo.FakeOpenAI,
) -> None:
    """A call waiting for its lane has its request built (and held at its gate); one that
    leaves before its turn never sent it and never held the provider's place, so it gives
    none back: the limit of 2 still holds for the calls after it."""
    fake_openai.script(A, fo.Ok(latency=1.0), *[fo.Ok(latency=0.3)] * 6)
    async for imagegen in start(fake_openai, IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 2}}):
        first = asyncio.ensure_future(imagegen.generate(prompt="first", video_id="v1", scene=1, video_parallelism=1))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        second = await imagegen.generate(prompt="second", video_id="v1", scene=2, video_parallelism=1, timeout=0.9)
        assert second.placeholder and outcomes(second)[0] == (A, "TIMEOUT")
        assert outcomes(await first) == [(A, "SUCCESS")]
        answers = await asyncio.gather(
            *(imagegen.generate(prompt=f"other {i}", video_id=f"w{i}", scene=1) for i in range(6))
        )
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 6
        assert fake_openai.max_in_flight[A] == 2  # a place given back twice would let a third in
        assert "second" not in [r.body["prompt"] for r in fake_openai.generation_requests()]


async def test_a_url_answer_after_a_long_wait_for_the_lane_has_the_whole_attempt_to_download(
    fake_openai: fo.FakeOpenAI,
) -> None:
    """The request built while its call waited gets its deadline when it is sent: the fourth
    call waits 1.2 s for its lane, longer than its model's 1 s, and still downloads its image
    (a deadline counted from the build would leave the download 10 ms of its 100)."""
    fake_openai.script(A, fo.UrlAnswer(latency=0.4))
    fake_openai.file_latency = 0.1
    async for imagegen in start(fake_openai, IMAGEGEN_ATTEMPT_TIMEOUT=1.0):
        answers = await asyncio.gather(*scenes(imagegen, "v1", 4, 1))
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 4
        assert fake_openai.max_in_flight[A] == 1
        assert fake_openai.count(None, path="/files/img.png") == 4


async def test_a_request_that_fails_while_built_is_made_again_when_its_turn_comes(
    fake_openai: fo.FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request built while its call waits may end at its gate without being sent (the
    client failing before its bytes go): it held no place and the call is not failed for
    it; its request is made again once the call's turn comes, the provider's place given
    back once (the limit of 1 then still holds)."""
    fake_openai.script(A, fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 1}}):
        provider = imagegen.chain.slots[0].provider
        generate, built = provider.generate, list[SendGate]()

        async def fails_while_waiting(
            *args: Any, _real: Any = generate, _built: list[Any] = built, **kwargs: Any
        ) -> Any:
            gate = SEND_GATE.get()
            if gate is not None and not gate.opened:
                _built.append(gate)
                raise RuntimeError("the client failed before its bytes went")
            return await _real(*args, **kwargs)

        monkeypatch.setattr(provider, "generate", fails_while_waiting)
        answers = await asyncio.gather(*scenes(imagegen, "v1", 3, 1))
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 3
        assert len(built) == 2  # the two that waited for the lane
        answers = await asyncio.gather(
            *(imagegen.generate(prompt=f"other {i}", video_id=f"w{i}", scene=1) for i in range(3))
        )
        assert [outcomes(a) for a in answers] == [[(A, "SUCCESS")]] * 3
        assert fake_openai.max_in_flight[A] == 1 and fake_openai.count(A) == 6
