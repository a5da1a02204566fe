"""The provider chain against a fake OpenAI server that the real `openai` client talks to.
Proofs come from the fake's request counts and the answer's attempts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from services.common.config import ImagegenSettings
from services.common.server import Registration
from services.imagegen.__main__ import build_servicer
from services.imagegen.providers.base import ImageRequest, Outcome, ProviderFailure
from services.imagegen.providers.openai_images import OpenAIImageProvider, openai_client
from services.imagegen.servicer import SERVICE, ImageGenServicer
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.conftest import grpc_server
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import KEY, A, B


def settings(fake_openai: fo.FakeOpenAI, **env: Any) -> ImagegenSettings:
    values: dict[str, Any] = {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "IMAGEGEN_CHAIN": f"{A},{B}",
        "IMAGEGEN_ATTEMPT_TIMEOUT": 5,
        "IMAGEGEN_BREAKER_COOLDOWN": 300,
        **env,
    }
    return ImagegenSettings.model_validate({k: v if isinstance(v, dict) else str(v) for k, v in values.items()})


class Stub:
    def __init__(self, stub: imagegen_pb2_grpc.ImageGenServiceStub, servicer: ImageGenServicer) -> None:
        self.stub, self.servicer, self.chain = stub, servicer, servicer.chain

    async def generate(
        self, prompt: str = "a fox", timeout: float = 30, **fields: Any
    ) -> imagegen_pb2.GenerateResponse:
        request = imagegen_pb2.GenerateRequest(prompt=prompt, size=fields.pop("size", "1024x1024"), **fields)
        answer: imagegen_pb2.GenerateResponse = await self.stub.Generate(request, timeout=timeout)
        return answer


async def serve(configured: ImagegenSettings) -> AsyncIterator[Stub]:
    """imagegen as configured, on a real gRPC server, and a stub to call it."""
    servicer, _shared = await build_servicer(configured)
    reg = Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, servicer, SERVICE)
    try:
        async with grpc_server(reg) as (_running, channel):
            yield Stub(imagegen_pb2_grpc.ImageGenServiceStub(channel), servicer)
    finally:
        await servicer.chain.close()


async def start(fake_openai: fo.FakeOpenAI, **env: Any) -> AsyncIterator[Stub]:
    async for stub in serve(settings(fake_openai, **env)):
        yield stub


@pytest.fixture
async def imagegen(fake_openai: fo.FakeOpenAI) -> AsyncIterator[Stub]:
    async for stub in start(fake_openai):
        yield stub


def outcomes(answer: imagegen_pb2.GenerateResponse) -> list[tuple[str, str]]:
    return [
        (a.provider, imagegen_pb2.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_"))
        for a in answer.attempts
    ]


async def test_healthy_first_model_serves_with_exactly_one_request(fake_openai: fo.FakeOpenAI, imagegen: Stub) -> None:
    answer = await imagegen.generate()
    assert (answer.provider, answer.placeholder) == (A, False)
    assert outcomes(answer) == [(A, "SUCCESS")]
    assert fake_openai.count(A) == 1 and fake_openai.count(B) == 0
    assert answer.content_type == "image/png" and answer.extension == "png"
    sent = fake_openai.generation_requests()[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["n"] == 1 and sent.body["size"] == "1024x1024" and sent.body["output_format"] == "png"
    assert "response_format" not in sent.body  # GPT image models answer base64 only
    assert "x-stainless-retry-count" not in sent.headers or sent.headers["x-stainless-retry-count"] == "0"


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"), [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")]
)
async def test_the_bytes_decide_the_content_type(
    fake_openai: fo.FakeOpenAI, imagegen: Stub, fmt: str, mime: str, ext: str
) -> None:
    fake_openai.script(A, fo.Ok(fmt=fmt))
    answer = await imagegen.generate()
    assert (answer.content_type, answer.extension) == (mime, ext)


async def test_server_error_moves_to_the_next_model_at_once(fake_openai: fo.FakeOpenAI, imagegen: Stub) -> None:
    fake_openai.script(A, fo.SERVER_ERROR)
    answer = await imagegen.generate()
    assert answer.provider == B
    assert outcomes(answer) == [(A, "TRANSIENT"), (B, "SUCCESS")]
    assert (fake_openai.count(A), fake_openai.count(B)) == (1, 1)


async def test_the_last_model_is_asked_again_after_a_server_error(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(B, fo.SERVER_ERROR, fo.Ok())
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B):
        answer = await imagegen.generate()
        assert outcomes(answer) == [(B, "TRANSIENT"), (B, "SUCCESS")]
        assert fake_openai.count(B) == 2


async def test_a_connection_hung_up_on_is_lost_not_timed_out_and_the_model_is_asked_again(
    fake_openai: fo.FakeOpenAI,
) -> None:
    # The SDK's aiohttp transport names every lost connection a timeout (ConnectTimeout);
    # nothing came back, so the model is asked again, as after any lost connection.
    fake_openai.script(B, fo.HangUp(), fo.Ok())
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B):
        answer = await imagegen.generate()
        assert outcomes(answer) == [(B, "TRANSIENT"), (B, "SUCCESS")]
        assert "connection error" in answer.attempts[0].reason
        assert fake_openai.count(B) == 2, "the fault was felt: two requests"


async def test_a_refused_connection_is_lost_not_timed_out() -> None:
    closed = socket.socket()  # bound, never listening: every connection to it is refused
    closed.bind(("127.0.0.1", 0))
    provider = OpenAIImageProvider(openai_client(KEY, f"http://127.0.0.1:{closed.getsockname()[1]}/v1"), A)
    try:
        with pytest.raises(ProviderFailure) as failed:
            await provider.generate(ImageRequest("a fox", (1024, 1024)), time.monotonic() + 10)
        assert (failed.value.outcome, failed.value.retry_same) == (Outcome.TRANSIENT, True)
        assert failed.value.reason == "connection error"
    finally:
        await provider.close()
        closed.close()


async def test_the_last_model_is_not_asked_again_after_a_timeout_at_its_own_limit(fake_openai: fo.FakeOpenAI) -> None:
    # Its own limit (1 s) is shorter than the call's time (4 s less the reserve), so a second
    # request would fit; it is not sent: the first may still be billed (a frozen imagegen
    # once found its paid answer only after its limit, and paid for the scene twice).
    fake_openai.script(B, fo.Hang(), fo.Ok())
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B, IMAGE_GEN_TIMEOUT=4, IMAGEGEN_ATTEMPT_TIMEOUT=1):
        answer = await imagegen.generate()
        assert answer.placeholder and outcomes(answer) == [(B, "TIMEOUT")]
        assert fake_openai.count(B) == 1


async def test_a_timeout_at_the_models_share_is_not_asked_again(fake_openai: fo.FakeOpenAI) -> None:
    # Cut at its share of the call (3.5 s), not at its own limit (30 s): the request goes on
    # (its image may still come), so a second one is not sent.
    fake_openai.script(B, fo.Hang(), fo.Ok())
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B, IMAGE_GEN_TIMEOUT=4, IMAGEGEN_ATTEMPT_TIMEOUT=30):
        answer = await imagegen.generate()
        assert answer.placeholder and outcomes(answer) == [(B, "TIMEOUT")]
        assert fake_openai.count(B) == 1


async def test_without_same_model_retries_the_last_model_is_asked_once(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(B, fo.SERVER_ERROR)
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B, IMAGEGEN_SAME_PROVIDER_RETRIES=0):
        answer = await imagegen.generate()
        assert answer.placeholder and outcomes(answer) == [(B, "TRANSIENT")]
        assert fake_openai.count(B) == 1


async def test_hanging_first_model_still_leaves_the_second_its_turn(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Hang())
    async for imagegen in start(fake_openai, IMAGEGEN_ATTEMPT_TIMEOUT=1):
        started = time.monotonic()
        answer = await imagegen.generate(timeout=30)
        elapsed = time.monotonic() - started
        assert answer.provider == B and not answer.placeholder
        assert outcomes(answer) == [(A, "TIMEOUT"), (B, "SUCCESS")]
        assert elapsed < 1 + 3, f"took {elapsed:.2f} s"
        assert fake_openai.count(A) == 1  # a timeout is not retried on the same model


async def test_trickling_body_is_cut_at_the_attempt_timeout(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Trickle(interval=0.2, chunk=4))
    async for imagegen in start(fake_openai, IMAGEGEN_ATTEMPT_TIMEOUT=1):
        started = time.monotonic()
        answer = await imagegen.generate()
        assert outcomes(answer) == [(A, "TIMEOUT"), (B, "SUCCESS")]
        assert time.monotonic() - started < 1 + 3


async def test_answer_arrives_before_a_short_caller_deadline_even_when_every_model_hangs(
    fake_openai: fo.FakeOpenAI, imagegen: Stub
) -> None:
    fake_openai.script(A, fo.Hang())
    fake_openai.script(B, fo.Hang())
    started = time.monotonic()
    answer = await imagegen.generate(timeout=2.0)
    elapsed = time.monotonic() - started
    assert answer.placeholder and answer.provider == "placeholder"
    assert elapsed < 2.0
    assert answer.content_type == "image/png" and (answer.width, answer.height) == (1024, 1024)
    assert outcomes(answer)[0][1] == "TIMEOUT"


@pytest.mark.parametrize("behaviour", [fo.Garbage(), fo.BadBase64()], ids=["garbage-bytes", "bad-base64"])
async def test_bytes_that_are_not_an_image_fall_through(
    fake_openai: fo.FakeOpenAI, imagegen: Stub, behaviour: fo.Behaviour
) -> None:
    fake_openai.script(A, behaviour)
    answer = await imagegen.generate()
    assert outcomes(answer) == [(A, "INVALID_IMAGE"), (B, "SUCCESS")]


async def test_empty_data_counts_as_a_failure(fake_openai: fo.FakeOpenAI, imagegen: Stub) -> None:
    fake_openai.script(A, fo.EmptyData())
    answer = await imagegen.generate()
    assert answer.provider == B
    assert outcomes(answer)[0] == (A, "TRANSIENT") and "empty data" in answer.attempts[0].reason


async def test_content_policy_refusal_goes_to_the_next_model_without_a_breaker(
    fake_openai: fo.FakeOpenAI, imagegen: Stub
) -> None:
    fake_openai.script(A, fo.CONTENT_POLICY, fo.Ok())
    first = await imagegen.generate()
    assert outcomes(first) == [(A, "CONTENT_POLICY"), (B, "SUCCESS")]
    second = await imagegen.generate()
    assert second.provider == A  # not skipped: a refusal says nothing about the next prompt


@pytest.mark.parametrize(
    "error", [fo.BILLING, fo.QUOTA, fo.BAD_KEY, fo.UNKNOWN_MODEL], ids=["billing", "quota", "bad-key", "unknown-model"]
)
async def test_hard_failure_opens_the_breaker_so_the_next_call_skips_the_model(
    fake_openai: fo.FakeOpenAI, imagegen: Stub, error: fo.Error
) -> None:
    fake_openai.script(A, error)
    first = await imagegen.generate()
    assert outcomes(first) == [(A, "HARD_FAILURE"), (B, "SUCCESS")]
    second = await imagegen.generate()
    assert outcomes(second) == [(A, "SKIPPED"), (B, "SUCCESS")]
    assert "breaker open" in second.attempts[0].reason
    assert fake_openai.count(A) == 1
    assert KEY not in first.attempts[0].reason


async def test_breaker_lets_the_model_be_tried_again_after_the_cooldown(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.BILLING, fo.Ok())
    async for imagegen in start(fake_openai, IMAGEGEN_BREAKER_COOLDOWN=0.5):
        await imagegen.generate()
        assert fake_openai.count(A) == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = await imagegen.generate()
            if answer.provider == A:
                break
            assert outcomes(answer)[0] == (A, "SKIPPED")
        assert answer.provider == A and fake_openai.count(A) == 2


async def test_rate_limit_waits_for_retry_after_when_it_fits(fake_openai: fo.FakeOpenAI, imagegen: Stub) -> None:
    fake_openai.script(A, fo.rate_limited(0.3), fo.Ok())
    answer = await imagegen.generate()
    assert outcomes(answer) == [(A, "RATE_LIMITED"), (A, "SUCCESS")]
    first, second = [r.at for r in fake_openai.generation_requests()]
    assert second - first >= 0.3


async def test_rate_limit_with_a_retry_after_beyond_the_budget_moves_on_at_once(
    fake_openai: fo.FakeOpenAI, imagegen: Stub
) -> None:
    fake_openai.script(A, fo.rate_limited(120))
    started = time.monotonic()
    answer = await imagegen.generate()
    assert outcomes(answer) == [(A, "RATE_LIMITED"), (B, "SUCCESS")]
    assert time.monotonic() - started < 10


async def test_prompt_too_long_for_a_model_skips_it_with_the_reason(fake_openai: fo.FakeOpenAI) -> None:
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=f"dall-e-2,{B}"):
        answer = await imagegen.generate(prompt="p" * 1_500)
        assert outcomes(answer) == [("dall-e-2", "SKIPPED"), (B, "SUCCESS")]
        assert "at most 1000" in answer.attempts[0].reason
        assert fake_openai.count("dall-e-2") == 0


async def test_each_model_family_gets_the_parameters_it_accepts(fake_openai: fo.FakeOpenAI) -> None:
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN="dall-e-3,dall-e-2", IMAGEGEN_QUALITY="high"):
        fake_openai.script("dall-e-3", fo.SERVER_ERROR)
        await imagegen.generate(size="1536x1024")
        sent = {r.model: r.body for r in fake_openai.generation_requests()}
        assert sent["dall-e-3"]["size"] == "1792x1024" and sent["dall-e-3"]["n"] == 1
        assert sent["dall-e-3"]["response_format"] == "b64_json"
        assert "quality" not in sent["dall-e-3"] and "output_format" not in sent["dall-e-3"]
        assert sent["dall-e-2"]["size"] in ("1024x1024", "512x512", "256x256")


async def test_a_url_answer_is_downloaded_inside_the_budget(fake_openai: fo.FakeOpenAI, imagegen: Stub) -> None:
    fake_openai.script(A, fo.UrlAnswer(fmt="JPEG"))
    answer = await imagegen.generate()
    assert answer.provider == A and answer.content_type == "image/jpeg"
    assert fake_openai.count(None, path="/files/img.jpeg") == 1


async def test_model_check_skips_missing_and_retired_models_loudly(caplog: pytest.LogCaptureFixture) -> None:
    models = [fo.model_entry(A, shutdown_at="2026-01-01T00:00:00Z")]  # B is missing
    with fo.FakeOpenAI(models=models, api_key=KEY) as fake_openai:
        async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=f"{A},{B}"):
            answer = await imagegen.generate()
            assert answer.placeholder
            assert [o for _p, o in outcomes(answer)] == ["SKIPPED", "SKIPPED"]
            assert "retired on 2026-01-01" in answer.attempts[0].reason
            assert "not in the provider's model list" in answer.attempts[1].reason
            assert fake_openai.count() == 0
            providers = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(), timeout=5)
            assert [(p.name, p.available) for p in providers.providers] == [
                (A, False),
                (B, False),
                ("placeholder", True),
            ]
    assert any("cannot be used" in r.getMessage() for r in caplog.records)


async def test_unreadable_model_list_starts_anyway_with_every_model() -> None:
    with fo.FakeOpenAI(models=None, api_key=KEY) as fake_openai:
        async for imagegen in start(fake_openai):
            answer = await imagegen.generate()
            assert answer.provider == A


async def test_per_model_concurrency_limit_is_shared_by_all_callers(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_PROVIDER_LIMITS={A: {"concurrency": 2}}):
        answers = await asyncio.gather(*(imagegen.generate() for _ in range(6)))
        assert all(a.provider == A for a in answers)
        assert fake_openai.max_in_flight[A] == 2


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "x", "size": "1000"}, "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": "99999x1"}, "between 64 and 4096"),
        ({"prompt": "x", "size": "1024x"}, "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": "8000x8000"}, "between 64 and 4096"),
        ({"prompt": "x", "video_id": "v", "scene": -1}, "1-based"),
        ({"prompt": "x", "video_id": "v", "scene": 10_001}, "from 1 to 10000"),
        ({"prompt": "x", "video_id": "v", "scene": 2_147_483_647}, "from 1 to 10000"),
        ({"prompt": "x", "quality": "ultra"}, "low, medium, high, auto"),
        ({"prompt": "x", "video_id": "../etc"}, "video_id may contain only"),
        ({"prompt": "x", "video_parallelism": 2}, "give its video_id too"),
        ({"prompt": "x", "video_id": "v", "scene": 1, "video_parallelism": 65}, "at most 64"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_sent(
    fake_openai: fo.FakeOpenAI, imagegen: Stub, fields: dict, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await imagegen.generate(**fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (err.value.details() or "")
    assert fake_openai.count() == 0


async def test_no_key_means_the_placeholder_alone_at_the_requested_size(fake_openai: fo.FakeOpenAI) -> None:
    async for imagegen in start(fake_openai, OPENAI_API_KEY=""):
        answer = await imagegen.generate(size="1536x1024")
        assert answer.placeholder and answer.attempts == []
        assert (answer.width, answer.height) == (1536, 1024)
        assert fake_openai.count(None, path="/v1/models") == 0


def test_provider_limits_and_chain_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_PROVIDER_LIMITS", '{"gpt-image-2": {"concurrency": 2, "timeout": 20}}')
    monkeypatch.setenv("IMAGEGEN_CHAIN", "gpt-image-2, dall-e-3 ,placeholder")
    loaded = ImagegenSettings()
    assert loaded.chain == ["gpt-image-2", "dall-e-3"]
    assert loaded.provider_limits["gpt-image-2"].concurrency == 2
    monkeypatch.setenv("IMAGEGEN_PROVIDER_LIMITS", '{"gpt-image-2": {"concurency": 2}}')
    with pytest.raises(ValueError, match="concurency"):
        ImagegenSettings()


def retry_after_date(seconds: float) -> str:
    from email.utils import format_datetime

    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "waits"),
    [
        ({"retry-after-ms": "300"}, True),
        ({"retry-after": "__date_in_2s__"}, True),
        ({}, True),  # none given: the usual short backoff
        ({"retry-after-ms": "120000"}, False),  # past the deadline: the next model at once
    ],
    ids=["retry-after-ms", "http-date", "none", "ms-beyond-budget"],
)
async def test_every_form_of_retry_after_is_honoured_when_it_fits(
    fake_openai: fo.FakeOpenAI, imagegen: Stub, headers: dict[str, str], waits: bool
) -> None:
    given = {k: (retry_after_date(2) if v == "__date_in_2s__" else v) for k, v in headers.items()}
    fake_openai.script(A, fo.Error(429, "rate_limit_exceeded", "Rate limit reached.", headers=given), fo.Ok())
    answer = await imagegen.generate()
    if waits:
        assert outcomes(answer) == [(A, "RATE_LIMITED"), (A, "SUCCESS")]
        first, second = [r.at for r in fake_openai.generation_requests()]
        expected = {"retry-after-ms": 0.3, "retry-after": 1.0}.get(next(iter(headers), ""), 0.2)
        assert second - first >= expected * 0.9  # the wait asked for (an HTTP date: whole seconds)
    else:
        assert outcomes(answer) == [(A, "RATE_LIMITED"), (B, "SUCCESS")]
        assert fake_openai.count(A) == 1
