"""GenerateStream: the partial images of a model that streams, each checked like a final,
before the same answer as Generate; over the real gRPC server and the real `openai` client
streaming from the fake (Server-Sent Events as the images API sends them)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import grpc
import pytest
from PIL import Image

from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B
from tests.imagegen.test_chain import Stub, outcomes, start


async def stream(imagegen: Stub, prompt: str = "a fox", timeout: float = 30, **fields: Any) -> list[Any]:
    request = imagegen_pb2.GenerateRequest(prompt=prompt, size=fields.pop("size", "1024x1024"), **fields)
    return [frame async for frame in imagegen.stub.GenerateStream(request, timeout=timeout)]


def partials(frames: list[Any]) -> list[imagegen_pb2.PartialImage]:
    return [f.partial for f in frames if f.WhichOneof("frame") == "partial"]


def final(frames: list[Any]) -> imagegen_pb2.GenerateResponse:
    assert frames[-1].WhichOneof("frame") == "final" and all(f.WhichOneof("frame") == "partial" for f in frames[:-1])
    answer: imagegen_pb2.GenerateResponse = frames[-1].final
    return answer


async def test_partials_come_checked_before_the_same_final_as_generate(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.9, size=(0, 0)))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=2):
        frames = await stream(imagegen, video_id="v", scene=1)
        shown = partials(frames)
        assert [p.index for p in shown] == [0, 1] and {p.provider for p in shown} == {A}
        for p in shown:
            with Image.open(io.BytesIO(p.image)) as image:
                assert image.size == (p.width, p.height) == (1024, 1024) and p.content_type == "image/png"
        answer = final(frames)
        assert answer.provider == A and not answer.placeholder and outcomes(answer) == [(A, "SUCCESS")]
        assert answer.image not in {p.image for p in shown}
        sent = fake_openai.generation_requests()[-1].body
        assert sent["stream"] is True and sent["partial_images"] == 2
        assert fake_openai.paid == ["a fox"], "one paid image"
        plain = await imagegen.generate(prompt="a heron")  # Generate never streams
        assert "stream" not in fake_openai.generation_requests()[-1].body and not plain.placeholder


async def test_a_model_that_refuses_to_stream_is_asked_without_it_and_nothing_counts_against_it(
    fake_openai: fo.FakeOpenAI,
) -> None:
    fake_openai.refuse_stream.add(A)
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=2, IMAGEGEN_BREAKER_THRESHOLD=1):
        before = (await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest())).providers[0]
        assert before.streams and before.partial_images == 2
        for prompt in ("first", "second"):
            frames = await stream(imagegen, prompt)
            assert partials(frames) == [] and outcomes(final(frames)) == [(A, "SUCCESS")]
        bodies = [r.body for r in fake_openai.generation_requests()]
        assert [bool(b.get("stream")) for b in bodies] == [True, False, False], "refused once, then remembered"
        assert fake_openai.paid == ["first", "second"]
        state = (await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest())).providers[0]
        assert state.breaker_state == "closed" and state.consecutive_failures == 0 and not state.streams


async def test_a_broken_partial_is_dropped_never_shown(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.9, broken_partials=frozenset({0})))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=2):
        frames = await stream(imagegen)
        assert [p.index for p in partials(frames)] == [1]
        assert [broken for *_, broken in fake_openai.partials] == [True, False], "the fault was sent"
        assert outcomes(final(frames)) == [(A, "SUCCESS")]


@pytest.mark.parametrize(("clean", "reason"), [(False, "connection error"), (True, "stream ended before its final")])
async def test_a_stream_that_stops_midway_still_ends_with_an_image_paid_once(
    fake_openai: fo.FakeOpenAI, clean: bool, reason: str
) -> None:
    fake_openai.script(B, fo.StreamCut(partials=1, clean=clean), fo.Ok(latency=0.6))
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B, IMAGEGEN_PARTIAL_IMAGES=2):
        frames = await stream(imagegen, "cut short")
        answer = final(frames)
        assert outcomes(answer) == [(B, "TRANSIENT"), (B, "SUCCESS")]
        assert reason in answer.attempts[0].reason
        assert fake_openai.paid == ["cut short"]
        assert len(partials(frames)) >= 1


async def test_a_streamed_request_hung_up_on_is_asked_again_not_taken_for_a_timeout(fake_openai: fo.FakeOpenAI) -> None:
    # The aiohttp transport names the lost connection a timeout; nothing was streamed.
    fake_openai.script(B, fo.HangUp(), fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_CHAIN=B, IMAGEGEN_PARTIAL_IMAGES=1):
        answer = final(await stream(imagegen, "hung up on"))
        assert outcomes(answer) == [(B, "TRANSIENT"), (B, "SUCCESS")]
        assert "connection error" in answer.attempts[0].reason
        sent = fake_openai.generation_requests()
        assert [r.body.get("stream") for r in sent] == [True, True], "both asked streamed: the fault was felt"
        assert fake_openai.paid == ["hung up on"]


async def test_a_quick_model_sends_fewer_partials_and_an_answer_paid_already_sends_none(
    fake_openai: fo.FakeOpenAI,
) -> None:
    fake_openai.script(A, fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=3):
        first = await stream(imagegen, "a quick one", video_id="v", scene=2)
        assert len(partials(first)) == 1, "one partial per 0.25 s of the model's latency at most"
        again = await stream(imagegen, "a quick one", video_id="v", scene=2)
        assert partials(again) == [] and final(again).image == final(first).image
        assert "already paid" in final(again).attempts[0].reason
        assert fake_openai.paid == ["a quick one"]


async def test_partials_are_paid_for_and_counted_in_the_answers_cost(fake_openai: fo.FakeOpenAI, tmp_path: Any) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({A: {"per_image": {"*": {"*": 0.04}}, "per_million_tokens": {"input": 5, "output": 40}}})
    )
    fake_openai.script(A, fo.Ok(latency=0.9))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=2, IMAGEGEN_PRICES_FILE=str(prices)):
        answer = final(await stream(imagegen))
        # The completed event's usage: 10 input tokens, 100 output for the image and 100 per partial.
        assert answer.cost_usd == pytest.approx((10 * 5 + 300 * 40) / 1e6)
        assert answer.attempts[0].output_tokens == 300


async def test_streamed_requests_reuse_one_connection(fake_openai: fo.FakeOpenAI) -> None:
    """A stream read only up to its final event leaves the connection unfit for reuse: each
    request would pay for a new one (found as 2 ms more per image in the pipeline bench)."""
    fake_openai.script(A, fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=1):
        opened = []
        for n in range(4):
            frames = await stream(imagegen, f"scene {n}")
            assert len(partials(frames)) == 1 and not final(frames).placeholder
            opened.append(fake_openai.connections)
        assert len(fake_openai.paid) == 4
        assert opened[1:] == opened[:1] * 3, f"connections opened after each request: {opened}"


async def test_a_body_left_open_after_its_final_is_not_waited_for(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(A, fo.Ok(latency=0.3, open_after_final=True), fo.Ok(latency=0.3))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=1):
        # A 60 s deadline: waiting for the body's end would take all of it.
        began = time.monotonic()
        held = final(await stream(imagegen, "held open", timeout=60))
        assert outcomes(held) == [(A, "SUCCESS")] and time.monotonic() - began < 20
        opened = fake_openai.connections
        after = final(await stream(imagegen, "next one"))
        assert outcomes(after) == [(A, "SUCCESS")]
        assert fake_openai.paid == ["held open", "next one"]
        assert fake_openai.connections == opened + 1, "the held connection was hung up on, a new one opened"


def test_the_fake_refuses_what_the_api_refuses_for_streaming(fake_openai: fo.FakeOpenAI) -> None:
    import httpx

    url = f"{fake_openai.base_url}/images/generations"
    headers = {"Authorization": f"Bearer {fo_key()}"}
    for bad in ({"partial_images": 4}, {"partial_images": -1}, {"partial_images": "2"}, {"stream": "yes"}):
        answer = httpx.post(url, json={"model": A, "prompt": "x", **bad}, headers=headers, timeout=10)
        assert answer.status_code == 400, bad
    refused = httpx.post(url, json={"model": "dall-e-3", "prompt": "x", "stream": True}, headers=headers, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"


def fo_key() -> str:
    from tests.imagegen.conftest import KEY

    return KEY


async def test_bad_input_to_generate_stream_is_refused_and_nothing_is_sent(fake_openai: fo.FakeOpenAI) -> None:
    async for imagegen in start(fake_openai):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream(imagegen, prompt="")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompt is empty" in (refused.value.details() or "")
        assert fake_openai.count() == 0


async def test_a_scene_that_waited_for_its_lane_still_shows_its_partials(fake_openai: fo.FakeOpenAI) -> None:
    """The second scene's request is built while the first holds the video's lane and sent
    after it: its partials are shown all the same, each after the first scene's final."""
    fake_openai.script(A, fo.Ok(latency=0.9, size=(0, 0)))
    async for imagegen in start(fake_openai, IMAGEGEN_PARTIAL_IMAGES=2):
        one, two = await asyncio.gather(
            stream(imagegen, "scene one", video_id="v", scene=1, video_parallelism=1),
            stream(imagegen, "scene two", video_id="v", scene=2, video_parallelism=1),
        )
        assert [p.index for p in partials(one)] == [0, 1] and [p.index for p in partials(two)] == [0, 1]
        assert outcomes(final(one)) == outcomes(final(two)) == [(A, "SUCCESS")]
        assert fake_openai.max_in_flight[A] == 1
        assert sorted(fake_openai.paid) == ["scene one", "scene two"]
