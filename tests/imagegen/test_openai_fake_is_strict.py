"""The OpenAI fake refuses what the Images API refuses, per model family, so a wrong request
from our provider fails a test instead of passing against a lenient fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import KEY

GPT = "gpt-image-2"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    models = [fo.model_entry(m) for m in (GPT, "dall-e-3", "dall-e-2")]
    with (
        fo.FakeOpenAI(models=models, api_key=KEY) as fake,
        httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as http,
    ):
        yield http


def generate(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/images/generations", json={"prompt": "a fox", "size": "1024x1024", **body})


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"model": GPT, "response_format": "b64_json"}, "response_format"),
        ({"model": GPT, "colour": "red"}, "colour"),
        ({"model": GPT, "output_format": "gif"}, "output_format"),
        ({"model": GPT, "quality": "hd"}, "quality"),
        ({"model": GPT, "n": 11}, "'n'"),
        ({"model": GPT, "n": "2"}, "'n'"),
        ({"model": GPT, "output_compression": 101}, "output_compression"),
        ({"model": GPT, "size": "1792x1024"}, "size"),
        ({"model": "dall-e-3", "output_format": "png"}, "output_format"),
        ({"model": "dall-e-3", "quality": "ultra"}, "quality"),
        ({"model": "dall-e-3", "n": 2}, "'n'"),
        ({"model": "dall-e-3", "style": "noir"}, "style"),
        ({"model": "dall-e-2", "quality": "hd"}, "quality"),
        ({"model": "dall-e-2", "size": "1024x1792"}, "size"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "too long"),
    ],
)
def test_what_a_family_does_not_take_is_a_400(client: httpx.Client, body: dict[str, Any], names: str) -> None:
    answer = generate(client, **body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and names in error["message"], error


@pytest.mark.parametrize(
    "body",
    [
        {"model": GPT, "quality": "low", "output_format": "webp", "output_compression": 80, "background": "auto"},
        {"model": GPT, "n": 5, "moderation": "low", "user": "u1"},
        {"model": "dall-e-3", "quality": "hd", "style": "natural", "response_format": "b64_json", "size": "1792x1024"},
        {"model": "dall-e-2", "n": 3, "size": "256x256", "response_format": "b64_json"},
    ],
)
def test_what_a_family_takes_is_answered_with_as_many_images_as_asked(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    answer = generate(client, **body)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == body.get("n", 1)
