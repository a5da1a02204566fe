"""An earlier request may still answer its call: when the chain stops waiting for a slow
model and asks the next, the slow model's image, if it comes first, is the call's answer
(it is paid for either way). Crossed with a hanging next model, a failing next model, the
lane, the placeholder's reserve and the late bound. Proofs come from the answers' attempts,
the fake's request and payment counts, and the metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from tests.conftest import eventually
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B
from tests.imagegen.test_chain import outcomes, start

# A's share of a 4 s call is (4 - 0.5 reserve) / 2 models = 1.75 s; its image comes at 2.5 s,
# inside the 3.5 s the call has before the placeholder's reserve.
BUDGET = {"IMAGE_GEN_TIMEOUT": 4, "IMAGEGEN_ATTEMPT_TIMEOUT": 30, "IMAGEGEN_SAME_PROVIDER_RETRIES": 0}
SLOW = 2.5


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_slow_models_image_answers_while_the_next_model_hangs(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=SLOW))
    fake_openai.script(B, fo.Hang())
    taken = metric("storyshort_imagegen_late_taken_total", provider=A)
    async for imagegen in start(fake_openai, **BUDGET):
        answer = await imagegen.generate(prompt="a fox", video_id="v-earlier", scene=1, timeout=30)
        assert (answer.provider, answer.placeholder) == (A, False), outcomes(answer)
        assert outcomes(answer) == [(A, "TIMEOUT"), (B, "SKIPPED"), (A, "SUCCESS")]
        assert answer.attempts[1].reason == f"{A}'s image came first"
        assert "after its time" in answer.attempts[2].reason
        assert answer.attempts[2].output_tokens > 0, "the usage of the image it answers with is reported"
        assert metric("storyshort_imagegen_late_taken_total", provider=A) == taken + 1
        assert (fake_openai.count(A), fake_openai.count(B)) == (1, 1), "each model was asked once"
        assert fake_openai.paid == ["a fox"], "one image paid for"
        # The hanging request was handed on to finish in the background, within the bound.
        assert len(imagegen.chain._late) == 1


async def test_a_slow_models_image_answers_instead_of_the_placeholder_when_the_next_fails(
    fake_openai: fo.FakeOpenAI,
) -> None:
    fake_openai.script(A, fo.Ok(latency=SLOW))
    fake_openai.script(B, fo.SERVER_ERROR)
    async for imagegen in start(fake_openai, **BUDGET):
        answer = await imagegen.generate(prompt="a fox", timeout=30)
        assert (answer.provider, answer.placeholder) == (A, False), outcomes(answer)
        assert outcomes(answer) == [(A, "TIMEOUT"), (B, "TRANSIENT"), (A, "SUCCESS")]
        assert not imagegen.chain._late, "nothing left going on"


async def test_the_next_models_image_wins_when_it_comes_first(fake_openai: fo.FakeOpenAI) -> None:
    # The slow model's image would come at 2.5 s; the next model answers within 0.2 s of its turn.
    fake_openai.script(A, fo.Ok(latency=SLOW))
    fake_openai.script(B, fo.Ok(latency=0.2))
    late = metric("storyshort_imagegen_late_images_total", provider=A)
    async for imagegen in start(fake_openai, **BUDGET):
        scene: dict[str, Any] = {"prompt": "a fox", "video_id": "v-earlier", "scene": 2}
        answer = await imagegen.generate(timeout=30, **scene)
        assert outcomes(answer) == [(A, "TIMEOUT"), (B, "SUCCESS")]
        # A's request goes on and its image, once in, is kept for the scene (not wasted).

        async def kept() -> bool:
            return metric("storyshort_imagegen_late_images_total", provider=A) > late

        assert await eventually(kept)
        assert sorted(fake_openai.paid) == ["a fox", "a fox"]


async def test_a_slow_image_past_the_placeholders_reserve_is_not_waited_for(fake_openai: fo.FakeOpenAI) -> None:
    # A's image would come after the call's time less the reserve: the placeholder answers
    # in time and the image is kept for the scene instead.
    fake_openai.script(A, fo.Ok(latency=6.0))
    fake_openai.script(B, fo.SERVER_ERROR)
    async for imagegen in start(fake_openai, **BUDGET):
        answer = await imagegen.generate(prompt="a fox", video_id="v-earlier", scene=3, timeout=30)
        assert answer.placeholder and outcomes(answer) == [(A, "TIMEOUT"), (B, "TRANSIENT")]
        assert len(imagegen.chain._late) == 1


async def test_a_call_answered_by_its_earlier_image_leaves_its_lane(fake_openai: fo.FakeOpenAI) -> None:
    # Two scenes of one video through a lane of one: the first is answered by A's earlier
    # image while B hangs, and the second must then get the lane and an image of its own.
    fake_openai.script(A, fo.Ok(latency=SLOW), fo.Ok())
    fake_openai.script(B, fo.Hang())
    async for imagegen in start(fake_openai, **BUDGET):
        lane: dict[str, Any] = {"video_id": "v-lane", "video_parallelism": 1, "timeout": 30}
        first = asyncio.ensure_future(imagegen.generate(prompt="scene 1", scene=1, **lane))
        second = asyncio.ensure_future(imagegen.generate(prompt="scene 2", scene=2, **lane))
        answers = await asyncio.gather(first, second)
        assert [a.provider for a in answers] == [A, A], [outcomes(a) for a in answers]
        assert not any(a.placeholder for a in answers)
        # Whichever got the lane first met the slow image; the other went once it was in,
        # not when the hanging request ends (its 30 s limit is past the calls' deadline).
        assert sorted(map(outcomes, answers), key=len) == [
            [(A, "SUCCESS")],
            [(A, "TIMEOUT"), (B, "SKIPPED"), (A, "SUCCESS")],
        ]
