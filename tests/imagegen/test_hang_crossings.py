"""A hanging model crossed with lanes, provider limits, breakers and late requests: no
setting lets a hang hold the places that waiting scenes need, so every scene that has a
healthy model reachable inside its deadline gets that model (issue: "when mechanisms meet").

The hanging model's own timeout is longer than IMAGE_GEN_TIMEOUT, so the requests the
chain stops waiting for stay at the provider (to keep a late image) and hold its places."""

from __future__ import annotations

import asyncio
import time

import pytest

from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B, C
from tests.imagegen.test_chain import Stub, outcomes, start

CHAIN = (A, B, C)
SCENES, LANE = 6, 3  # more scenes than the video's lane holds, all sent at once (the gateway's way)


def gateway_timeout(image_gen_timeout: float) -> float:
    """What the gateway gives a Generate call (gateway/clients.py)."""
    return 2 * image_gen_timeout + 5


async def scene(imagegen: Stub, n: int, timeout: float, started: float) -> tuple[imagegen_pb2.GenerateResponse, float]:
    """Scene ``n`` of one video as the gateway asks for it; answers when it was answered."""
    answer = await imagegen.generate(
        prompt=f"scene {n}", video_id="v-hang", scene=n, video_parallelism=LANE, timeout=timeout
    )
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    "image_gen_timeout",
    [2.5, 5.0, pytest.param(10.0, marks=pytest.mark.matrix)],  # (the longest in the matrix run)
)
@pytest.mark.parametrize("hang_at", [0, 1, 2])
async def test_every_scene_with_a_healthy_model_in_reach_gets_it(
    fake_openai: fo.FakeOpenAI, image_gen_timeout: float, hang_at: int
) -> None:
    # Models before the hang fail at once (5xx), the one at `hang_at` hangs, the ones after
    # it are healthy; with the hang last no model is healthy and every scene must still get
    # its placeholder in time.
    for i, model in enumerate(CHAIN):
        if i < hang_at:
            fake_openai.script(model, fo.SERVER_ERROR)
        elif i == hang_at:
            fake_openai.script(model, fo.Hang())
        else:
            fake_openai.script(model, fo.Ok(latency=0.05))
    hanging = CHAIN[hang_at]
    healthy = CHAIN[hang_at + 1] if hang_at + 1 < len(CHAIN) else None
    async for imagegen in start(
        fake_openai,
        IMAGEGEN_CHAIN=",".join(CHAIN),
        IMAGE_GEN_TIMEOUT=image_gen_timeout,
        IMAGEGEN_ATTEMPT_TIMEOUT=4 * image_gen_timeout,  # late requests outlive the call
        IMAGEGEN_SAME_PROVIDER_RETRIES=0,
    ):
        started = time.monotonic()
        done = await asyncio.gather(
            *(scene(imagegen, n, gateway_timeout(image_gen_timeout), started) for n in range(1, SCENES + 1))
        )
        answers = [a for a, _ in done]
        assert fake_openai.count(hanging) >= 1, "the hang was felt"
        if healthy is None:
            assert all(a.placeholder for a in answers), [outcomes(a) for a in answers]
        else:
            assert [a.provider for a in answers] == [healthy] * SCENES, [outcomes(a) for a in answers]
        # No scene spent more than its own clock on the hang: each answered within one
        # IMAGE_GEN_TIMEOUT of its turn in the lane, the turns coming in two rounds at most.
        assert max(s for _, s in done) < 2 * image_gen_timeout + 2, [round(s, 2) for _, s in done]


async def test_a_request_waiting_for_a_full_model_moves_on_when_its_breaker_opens(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Hang())
    async for imagegen in start(
        fake_openai,
        IMAGE_GEN_TIMEOUT=6,
        IMAGEGEN_ATTEMPT_TIMEOUT=60,
        IMAGEGEN_BREAKER_THRESHOLD=1,
        IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 1}},
    ):
        # The first has the shorter deadline, so its share of A ends first: (3 - 0.5) / 2 s.
        first = asyncio.ensure_future(imagegen.generate(prompt="first", timeout=3))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        # The second waits for A's only place, which the first (and then its late request)
        # holds; its own share of A would let it wait (6 - 0.5) / 2 s.
        second = await imagegen.generate(prompt="second", timeout=17)
        assert (await first).provider == B
        assert second.provider == B and not second.placeholder
        assert outcomes(second)[0] == (A, "SKIPPED")
        assert second.attempts[0].reason.startswith("breaker opened while waiting"), second.attempts[0].reason
        assert second.attempts[0].duration_ms < (6 - 0.5) / 2 * 1000 - 250, "it moved on before its share ended"
        assert fake_openai.count(A) == 1, "the second was never sent to the hanging model"


async def test_a_request_never_waits_for_a_model_past_its_fair_share(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Hang())
    async for imagegen in start(
        fake_openai,
        IMAGE_GEN_TIMEOUT=6,
        IMAGEGEN_ATTEMPT_TIMEOUT=60,
        IMAGEGEN_BREAKER_THRESHOLD=10,  # the breaker stays closed: only the share ends the wait
        IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 1}},
    ):
        first = asyncio.ensure_future(imagegen.generate(prompt="first", timeout=17))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        second = await imagegen.generate(prompt="second", timeout=17)
        assert second.provider == B
        assert outcomes(second)[:2] == [(A, "SKIPPED"), (B, "SUCCESS")]
        assert "no room at the provider" in second.attempts[0].reason
        # Its fair share of A: (6 s less the 0.5 s reserve) / 2 models.
        assert second.attempts[0].duration_ms <= (6 - 0.5) / 2 * 1000 + 50
        assert (await first).provider == B
        assert fake_openai.count(A) == 1
