"""The chain against slow and failing models, through the real `openai` client and the fake:
the fair share of the time left, breakers that learn from timeouts and errors (with exactly
one probe when half-open), and late images kept instead of wasted. Proofs come from the
fake's request counts, the answers' attempts and ListProviders."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import REGISTRY

from services.imagegen.chain_config import ChainConfigError, load_entries
from storyshort.imagegen.v1 import imagegen_pb2
from tests.conftest import eventually
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B, C
from tests.imagegen.test_chain import Stub, outcomes, settings, start


async def providers(imagegen: Stub) -> dict[str, imagegen_pb2.ProviderState]:
    answer = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(), timeout=5)
    return {p.name: p for p in answer.providers}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_hanging_middle_model_leaves_the_third_its_turn(fake_openai: fo.FakeOpenAI) -> None:
    # Model timeouts (30 s) longer than the whole budget (6 s): only the fair share of what
    # is left keeps the hanging second model from taking everything.
    fake_openai.script(A, fo.SERVER_ERROR)
    fake_openai.script(B, fo.Hang())
    async for imagegen in start(
        fake_openai, IMAGEGEN_CHAIN=f"{A},{B},{C}", IMAGE_GEN_TIMEOUT=6, IMAGEGEN_ATTEMPT_TIMEOUT=30
    ):
        started = time.monotonic()
        answer = await imagegen.generate(timeout=30)
        elapsed = time.monotonic() - started
        assert outcomes(answer) == [(A, "TRANSIENT"), (B, "TIMEOUT"), (C, "SUCCESS")]
        assert not answer.placeholder
        # B's share: (6 - 0.5 reserve) / 2 models left = 2.75 s.
        assert 2.0 <= answer.attempts[1].duration_ms / 1000 <= 2.75 + 0.5
        assert elapsed < 6
        assert (fake_openai.count(A), fake_openai.count(B), fake_openai.count(C)) == (1, 1, 1)


async def test_k_timeouts_open_the_breaker_and_later_calls_skip_the_model(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Hang())
    env = {"IMAGEGEN_PROVIDER_LIMITS": {A: {"timeout": 0.5}}, "IMAGEGEN_BREAKER_THRESHOLD": 2}
    async for imagegen in start(fake_openai, **env):
        for _ in range(2):
            answer = await imagegen.generate()
            assert outcomes(answer) == [(A, "TIMEOUT"), (B, "SUCCESS")]
        state = (await providers(imagegen))[A]
        assert (state.breaker_state, state.breaker_open) == ("open", True)
        assert "2 failures in a row" in state.reason and state.retry_in_ms > 0
        for _ in range(3):
            answer = await imagegen.generate()
            assert outcomes(answer) == [(A, "SKIPPED"), (B, "SUCCESS")]
            assert "breaker open" in answer.attempts[0].reason
        assert fake_openai.count(A) == 2
        assert metric("storyshort_imagegen_breaker_state", provider=A) == 2


async def test_half_open_lets_exactly_one_probe_through_while_calls_run_in_parallel(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.SERVER_ERROR, fo.SERVER_ERROR, fo.Ok(latency=0.5))
    env = {"IMAGEGEN_BREAKER_THRESHOLD": 2, "IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN": 0.3}
    async for imagegen in start(fake_openai, **env):
        for _ in range(2):
            await imagegen.generate()
        assert (await providers(imagegen))[A].breaker_state == "open"

        async def half_open(imagegen: Stub = imagegen) -> bool:
            return (await providers(imagegen))[A].breaker_state == "half_open"

        assert await eventually(half_open)
        answers = await asyncio.gather(*(imagegen.generate(prompt=f"p{i}") for i in range(6)))
        served_by_a = [a for a in answers if a.provider == A]
        assert len(served_by_a) == 1  # the probe
        skipped = [a for a in answers if a.provider == B]
        assert len(skipped) == 5 and all("half-open" in a.attempts[0].reason for a in skipped)
        assert fake_openai.count(A) == 3
        assert (await providers(imagegen))[A].breaker_state == "closed"
        assert (await imagegen.generate()).provider == A  # closed: back in the chain


async def test_a_failed_probe_reopens_the_breaker_for_longer(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.SERVER_ERROR)
    env = {"IMAGEGEN_BREAKER_THRESHOLD": 1, "IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN": 0.3}
    async for imagegen in start(fake_openai, **env):
        await imagegen.generate()
        first = (await providers(imagegen))[A]

        async def half_open(imagegen: Stub = imagegen) -> bool:
            return (await providers(imagegen))[A].breaker_state == "half_open"

        assert await eventually(half_open)
        probe = await imagegen.generate()
        assert outcomes(probe) == [(A, "TRANSIENT"), (B, "SUCCESS")]  # a probe is not retried
        again = (await providers(imagegen))[A]
        assert again.breaker_state == "open"
        assert again.retry_in_ms > first.retry_in_ms  # 0.6 s after a failed probe, 0.3 s before
        assert fake_openai.count(A) == 2


async def test_hard_failures_skip_the_model_until_the_probe(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.BILLING)
    async for imagegen in start(fake_openai):
        first = await imagegen.generate()
        assert outcomes(first) == [(A, "HARD_FAILURE"), (B, "SUCCESS")]
        state = (await providers(imagegen))[A]
        assert state.breaker_state == "open" and "retrying will not help" in state.reason
        assert 290_000 < state.retry_in_ms <= 300_000


async def test_a_late_image_is_kept_and_answers_the_scene_without_paying_again(fake_openai: fo.FakeOpenAI) -> None:
    # The only model answers in 2 s; the call's budget runs out first (placeholder), but the
    # request goes on (the model's own timeout is 5 s) and its image waits for the scene.
    fake_openai.script(B, fo.Ok(latency=2.0))
    late_before = metric("storyshort_imagegen_late_images_total", provider=B)
    env = {"IMAGEGEN_CHAIN": B, "IMAGE_GEN_TIMEOUT": 1.5, "IMAGEGEN_ATTEMPT_TIMEOUT": 5}
    async for imagegen in start(fake_openai, **env):
        scene: dict[str, Any] = {"prompt": "a fox at dawn", "video_id": "v-late", "scene": 2}
        first = await imagegen.generate(**scene)
        assert first.placeholder and outcomes(first) == [(B, "TIMEOUT")]

        async def kept() -> bool:
            return metric("storyshort_imagegen_late_images_total", provider=B) > late_before

        assert await eventually(kept)
        second = await imagegen.generate(**scene)
        assert (second.provider, second.placeholder) == (B, False)
        assert outcomes(second) == [(B, "SKIPPED")] and "already paid" in second.attempts[0].reason
        assert fake_openai.count(B) == 1
        assert len(fake_openai.paid) == 1


async def test_beyond_the_late_bound_a_timed_out_request_is_cancelled(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(B, fo.Ok(latency=2.0))
    abandoned = metric("storyshort_imagegen_late_abandoned_total", provider=B)
    env = {"IMAGEGEN_CHAIN": B, "IMAGE_GEN_TIMEOUT": 1.5, "IMAGEGEN_ATTEMPT_TIMEOUT": 5, "IMAGEGEN_LATE_MAX": 0}
    async for imagegen in start(fake_openai, **env):
        answer = await imagegen.generate(prompt="a fox", video_id="v-late", scene=1)
        assert answer.placeholder
        assert metric("storyshort_imagegen_late_abandoned_total", provider=B) == abandoned + 1

        async def nothing_left(imagegen: Stub = imagegen) -> bool:
            return not imagegen.chain._late

        assert await eventually(nothing_left)


def test_a_budget_that_gives_no_model_a_useful_attempt_is_refused_at_start(fake_openai: fo.FakeOpenAI) -> None:
    try:
        load_entries(settings(fake_openai, IMAGEGEN_CHAIN=f"{A},{B},{C}", IMAGE_GEN_TIMEOUT=1.0))
    except ChainConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("a 1 s budget over three models was accepted")
    assert "IMAGE_GEN_TIMEOUT=1 s" in message and "IMAGEGEN_PLACEHOLDER_RESERVE=0.5 s" in message
    assert "3 models" in message and "IMAGEGEN_MIN_ATTEMPT" in message
