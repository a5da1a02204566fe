"""Spend: usage and estimated cost per attempt from a configured price table, unknown
prices counted as unknown, and images that would cross a budget skipped."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from services.imagegen.prices import ModelPrice, PriceTable
from services.imagegen.providers.base import Usage
from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import A, B
from tests.imagegen.test_chain import start

PRICES = {
    A: {"per_image": {"1024x1024": {"medium": 0.05, "*": 0.04}}, "per_million_tokens": {"input": 5.0, "output": 40.0}},
    B: {"per_image": {"*": {"*": 0.02}}},
}


def price_file(tmp_path: Path, table: object) -> str:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    return str(path)


def test_cost_comes_from_tokens_when_reported_else_from_the_image_price() -> None:
    table = PriceTable.load(None)
    assert table.cost(A, "1024x1024", "auto", None) is None
    table = PriceTable({k: ModelPrice.model_validate(v) for k, v in PRICES.items()})
    assert table.cost(A, "1024x1024", "medium", None) == 0.05
    assert table.cost(A, "1024x1024", "high", None) == 0.04
    assert table.cost(A, "1024x1024", "auto", Usage(1000, 4000)) == pytest.approx((1000 * 5 + 4000 * 40) / 1e6)
    assert table.cost(B, "1536x1024", "", None) == 0.02
    assert table.cost("dall-e-3", "1024x1024", "", None) is None


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({A: {"per_image": {"1024x1024": {"low": "cheap"}}}}, "gpt-image-2.5-sunburst.per_image.1024x1024.low"),
        ({A: {"per_imag": {}}}, "per_imag"),
        ({A: {"per_million_tokens": {"input": -1, "output": 1}}}, "per_million_tokens.input"),
        ({A: {"per_image": {"*": {"*": -0.5}}}}, "is negative"),
    ],
)
def test_a_malformed_price_table_fails_at_start_naming_the_key(tmp_path: Path, table: object, words: str) -> None:
    with pytest.raises(SystemExit, match=words.replace(".", r"\.").replace("*", r"\*")):
        PriceTable.load(Path(price_file(tmp_path, table)))


async def test_each_attempt_reports_usage_and_cost(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    async for imagegen in start(fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, PRICES)):
        answer = await imagegen.generate()  # the fake reports 10 input and 100 output tokens
        assert answer.provider == A and answer.cost_known
        assert answer.attempts[0].input_tokens == 10 and answer.attempts[0].output_tokens == 100
        assert answer.cost_usd == pytest.approx((10 * 5 + 100 * 40) / 1e6)


async def test_a_model_without_a_price_counts_as_unknown_not_zero(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async for imagegen in start(
        fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, {B: PRICES[B]}), IMAGEGEN_PARTIAL_IMAGES=0
    ):
        answer = await imagegen.generate()
        assert answer.provider == A
        assert answer.cost_known is False and answer.cost_usd == 0.0
    assert any(
        "no price for a configured model" in r.getMessage() and getattr(r, "provider", "") == A for r in caplog.records
    )


async def test_a_model_that_would_cross_the_budget_is_skipped_for_a_cheaper_one_or_the_placeholder(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    async for imagegen in start(fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, PRICES)):
        cheaper = await imagegen.generate(max_cost_usd=0.03)
        assert cheaper.provider == B and cheaper.cost_usd == 0.02
        assert cheaper.attempts[0].reason.startswith("budget")
        none_fits = await imagegen.generate(max_cost_usd=0.01)
        assert none_fits.placeholder and none_fits.cost_usd == 0.0
        assert all(a.reason.startswith("budget") for a in none_fits.attempts)
        assert fake_openai.count(A) == 0 and fake_openai.count(B) == 1
        # What is left of a 0.2 cap after four images of 0.04, as floats take them away one
        # by one (0.03999999999999999): a fifth of 0.04 exactly fits.
        left = 0.2
        for _ in range(4):
            left -= 0.04
        drifted = await imagegen.generate(max_cost_usd=left)
        assert left < 0.04 and drifted.provider == A and not drifted.placeholder


async def test_a_retried_scene_is_answered_from_the_replay_cache_without_paying_again(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    async for imagegen in start(
        fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, {A: {"per_image": {"*": {"*": 0.05}}}})
    ):
        first = await imagegen.generate(video_id="v1", scene=3)
        again = await imagegen.generate(video_id="v1", scene=3)
        other = await imagegen.generate(video_id="v1", scene=4)
        assert first.image == again.image and again.provider == A and not again.placeholder
        assert again.attempts[0].reason.startswith("replayed") and again.cost_usd == first.cost_usd == 0.05
        assert other.image and fake_openai.count(A) == 2  # scene 3 paid once, scene 4 once


async def test_a_quote_is_the_most_one_image_can_cost_on_the_available_models(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    prices = price_file(tmp_path, PRICES)
    async for imagegen in start(fake_openai, IMAGEGEN_PRICES_FILE=prices, IMAGEGEN_PARTIAL_IMAGES=0):
        medium = await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest(size="1024x1024", quality="medium"))
        assert medium.max_usd == pytest.approx(0.05) and list(medium.unpriced) == []
        other = await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest(size="1024x1024", quality="high"))
        assert other.max_usd == pytest.approx(0.04)  # A's "*" quality, above B's 0.02
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest(quality="best"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "quality 'best' is not one of" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as bad_size:
            await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest(size="big"))
        assert bad_size.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async for imagegen in start(
        fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, {B: PRICES[B]}), IMAGEGEN_PARTIAL_IMAGES=0
    ):
        partly = await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest())
        assert partly.max_usd == pytest.approx(0.02) and list(partly.unpriced) == [A]


async def test_a_quote_counts_the_partial_images_a_streaming_model_may_send(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    """Partials are billed (about 100 output tokens each): with two per image, A's quote at
    medium is 0.05 + 2 x 100 x 40 / 1e6; B has no token price and no per_partial: 0.02."""
    async for imagegen in start(
        fake_openai, IMAGEGEN_PRICES_FILE=price_file(tmp_path, PRICES), IMAGEGEN_PARTIAL_IMAGES=2
    ):
        medium = await imagegen.stub.QuoteImage(imagegen_pb2.QuoteImageRequest(size="1024x1024", quality="medium"))
        assert medium.max_usd == pytest.approx(0.05 + 2 * 100 * 40 / 1e6)
    table = PriceTable({A: ModelPrice.model_validate({"per_image": {"*": {"*": 0.01}}, "per_partial": 0.003})})
    assert table.per_image(A, "1024x1024", "low", partials=3) == pytest.approx(0.019)
    assert table.cost(A, "1024x1024", "low", None, partials=1) == pytest.approx(0.013)
    tokens = PriceTable({A: ModelPrice.model_validate(PRICES[A])})
    usage = Usage(input_tokens=10, output_tokens=300)  # the completed event's usage counts the partials
    assert tokens.cost(A, "1024x1024", "medium", usage, partials=2) == pytest.approx((10 * 5 + 300 * 40) / 1e6)
