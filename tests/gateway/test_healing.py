"""The healer on its own, against stand-in clients and a stand-in resume whose runs end as
the test says: how many tries it spends, and that it gives up after HEAL_MAX_TRIES."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from gateway.errors import HTTPError
from gateway.healing import Healer
from gateway.video_run import Scene, SceneOutcome, VideoRun
from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.status.v1 import status_pb2
from tests.conftest import eventually


class Providers:
    """ListProviders: one real model, its breaker closed (a heal may go at once)."""

    async def list_providers(self) -> imagegen_pb2.ListProvidersResponse:
        model = imagegen_pb2.ProviderState(name="m", kind="openai", available=True, breaker_state="closed")
        return imagegen_pb2.ListProvidersResponse(providers=[model])


def ended_with_placeholders(video_id: str) -> VideoRun:
    """A run whose two scenes got placeholders because every provider failed."""
    run = VideoRun(video_id, [Scene(1, "a fox"), Scene(2, "an owl")])
    for n in (1, 2):
        result = status_pb2.SceneResult(scene=n, state="stored", placeholder=True, error="every provider failed")
        run.outcomes[n] = SceneOutcome(result)
    return run


def heals(outcome: str) -> float:
    return REGISTRY.get_sample_value("storyshort_gateway_heals_total", {"outcome": outcome}) or 0.0


@pytest.mark.parametrize("max_tries", [1, 3])
async def test_it_gives_up_after_the_last_try_and_says_so(caplog: pytest.LogCaptureFixture, max_tries: int) -> None:
    healer = Healer(cast(Any, Providers()), first_wait=0.01, max_wait=0.05, max_tries=max_tries)
    resumed: list[str] = []

    async def resume(video_id: str, scenes: list[Scene], **_: Any) -> tuple[VideoRun, bool]:
        resumed.append(video_id)
        run = ended_with_placeholders(video_id)  # the providers still fail
        asyncio.get_running_loop().call_soon(healer.consider, run)  # the run's end, after its start
        return run, True

    healer.resume = resume
    given_up = heals("given_up")
    try:
        with caplog.at_level(logging.WARNING, logger="healing"):
            healer.consider(ended_with_placeholders("v-heal"))

            async def settled() -> bool:
                return heals("given_up") > given_up and not healer.pending

            assert await eventually(settled, timeout=10)
        assert resumed == ["v-heal"] * max_tries, "one resume per try, no more"
        assert heals("given_up") == given_up + 1
        assert any("not healed after the last try" in r.getMessage() for r in caplog.records)
        assert "v-heal" not in healer._tries  # a new POST starts counting afresh
    finally:
        await healer.close()


async def test_with_no_tries_allowed_nothing_is_resumed() -> None:
    healer = Healer(cast(Any, Providers()), first_wait=0.01, max_wait=0.05, max_tries=0)

    async def resume(video_id: str, scenes: list[Scene], **_: Any) -> tuple[VideoRun, bool]:
        raise AssertionError("HEAL_MAX_TRIES=0 resumed a video")

    healer.resume = resume
    healer.consider(ended_with_placeholders("v-off"))
    assert not healer.pending
    await healer.close()


async def test_a_queue_that_cannot_take_the_heal_is_asked_again_and_other_refusals_drop_it() -> None:
    """With RUNS=queue a resume is a queue start: its database down answers 503, which is an
    outage to wait out (the heal was dropped as if the video's scenes had changed); a 409
    (a newer run with other scenes) still drops it."""
    healer = Healer(cast(Any, Providers()), first_wait=0.01, max_wait=0.05, max_tries=3)
    asked: list[str] = []
    answers = [
        HTTPError(503, "UNAVAILABLE", "the run queue's database is unavailable", reason="QUEUE_UNAVAILABLE"),
        HTTPError(503, "UNAVAILABLE", "the run queue's database is unavailable", reason="QUEUE_UNAVAILABLE"),
        None,  # the queue is back: the heal starts
    ]

    async def resume(video_id: str, scenes: list[Scene], **_: Any) -> tuple[VideoRun, bool]:
        asked.append(video_id)
        answer = answers.pop(0) if answers else HTTPError(409, "ALREADY_EXISTS", "other scenes")
        if answer is not None:
            raise answer
        return ended_with_placeholders(video_id), True

    healer.resume = resume
    started = heals("started")
    try:
        healer.consider(ended_with_placeholders("v-queue"))

        async def healed() -> bool:
            return heals("started") > started

        assert await eventually(healed, timeout=10)
        assert asked == ["v-queue"] * 3  # asked again after each 503

        healer.consider(ended_with_placeholders("v-queue"))  # still placeholders: a second try

        async def dropped() -> bool:
            return len(asked) == 4 and not healer.pending

        assert await eventually(dropped, timeout=10)  # the 409 dropped it: not asked again
    finally:
        await healer.close()
