"""google.rpc rich error details: every RPC's errors carry a stable reason (ErrorInfo), the
field at fault (BadRequest) and, where waiting helps, a RetryInfo; the gateway turns them
into its JSON error. List RPCs page with page_size / page_token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.errors import ServiceDown, ServiceRefused, service_error_response
from services.common.status_details import ErrorDetails, from_trailers, to_status
from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import openai_fake as fo
from tests.imagegen.test_chain import Stub, start


@pytest.fixture
async def imagegen(fake_openai: fo.FakeOpenAI) -> AsyncIterator[Stub]:
    async for stub in start(fake_openai):
        yield stub


async def test_bad_input_names_the_field_and_a_stable_reason(imagegen: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await imagegen.generate(prompt="")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = from_trailers(err.value.trailing_metadata())
    assert details.reason == "PROMPT_EMPTY"
    assert [f for f, _d in details.violations] == ["prompt"] and "prompt is empty" in details.violations[0][1]
    assert details.retry_after is None  # sending it again as it is will not help


async def test_providers_are_listed_in_pages(imagegen: Stub) -> None:
    names, token, pages = [], "", 0
    while True:
        answer = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(page_size=1, page_token=token))
        names += [p.name for p in answer.providers]
        token, pages = answer.next_page_token, pages + 1
        if not token:
            break
    everything = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest())
    assert names == [p.name for p in everything.providers] and pages == 3 and everything.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(page_token="not ours"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_trailers(err.value.trailing_metadata()).reason == "PAGE_TOKEN_INVALID"


def test_details_survive_the_wire_format() -> None:
    sent = ErrorDetails("STORE_DOWN", [("video_id", "no such video")], 1.5)
    status = to_status(grpc.StatusCode.UNAVAILABLE, "down", sent, {"service": "s"})
    assert from_trailers(status.trailing_metadata) == sent


def test_the_gateway_carries_them_into_its_json_error() -> None:
    refused = ServiceRefused(
        "status",
        grpc.StatusCode.INVALID_ARGUMENT,
        "prompt is empty",
        ErrorDetails("PROMPT_EMPTY", [("prompt", "empty")]),
    )
    answer = service_error_response(refused)
    body = json.loads(bytes(answer.body))
    assert answer.status_code == 400
    assert body["error"] == {
        "code": "INVALID_ARGUMENT",
        "message": "prompt is empty",
        "reason": "PROMPT_EMPTY",
        "fieldViolations": [{"field": "prompt", "description": "empty"}],
    }
    down = service_error_response(
        ServiceDown("status", grpc.StatusCode.UNAVAILABLE, "store down", ErrorDetails("UNAVAILABLE", [], 2.0))
    )
    assert down.status_code == 503 and down.headers["retry-after"] == "2"
