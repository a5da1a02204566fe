"""Spend per video and budget caps over the real processes: a scene that would cross a cap
gets the placeholder with the reason "budget", the breach is logged once, and caps hold
across a restart because spend lives in the status store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes
from tests.fakes import openai_fake as fo
from tools.processes import System

pytestmark = pytest.mark.slow


def priced_env(fake_openai: fo.FakeOpenAI, tmp_path: Path, **extra: str) -> dict[str, str]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"per_image": {"*": {"*": 0.04}}}}))
    # Per-image price only (the fake's token usage is not priced): 0.04 per image.
    return provider_env(fake_openai.base_url, IMAGEGEN_PRICES_FILE=str(prices), SCENE_CONCURRENCY="1", **extra)


def test_video_cap_gives_placeholders_with_the_reason_and_logs_the_breach_once(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(MODEL, fo.Ok(usage=False))
    system = make_system(priced_env(fake_openai, tmp_path, BUDGET_VIDEO_USD="0.1"))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "capped", scenes(5))
        final = poll_until_done(client, "capped")[-1]
        metrics = client.get("/metrics").text
    system.stop_all()
    assert final["status"] == "assets_generated"
    paid = [i for i in final["images"] if not i["placeholder"]]
    capped = [i for i in final["images"] if i["placeholder"]]
    assert [i["scene"] for i in paid] == [1, 2]  # 0.08 spent; a third image would make 0.12
    assert [i["reason"] for i in capped] == ["budget"] * 3
    assert final["spendUsd"] == pytest.approx(0.08)
    assert final["summary"]["spendUsd"] == pytest.approx(0.08)
    assert fake_openai.count(MODEL) == 2
    assert 'storyshort_gateway_budget_breaches_total{cap="video"} 1.0' in metrics


def test_daily_cap_holds_across_a_gateway_restart(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(MODEL, fo.Ok(usage=False))
    system = make_system(priced_env(fake_openai, tmp_path, BUDGET_DAILY_USD="0.1"))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "first", scenes(2))
        assert poll_until_done(client, "first")[-1]["spendUsd"] == pytest.approx(0.08)
    system.stop("gateway")
    system.start("gateway")
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "second", scenes(2))
        second = poll_until_done(client, "second")[-1]
    assert [i["reason"] for i in second["images"]] == ["budget", "budget"]
    assert fake_openai.count(MODEL) == 2


def test_with_three_scenes_at_once_a_cap_is_overshot_by_at_most_two_images(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    """The README's promise with SCENE_CONCURRENCY=3: scenes already in flight may each cross
    the cap by one image, so at most SCENE_CONCURRENCY - 1 images beyond it."""
    fake_openai.script(MODEL, fo.Ok(usage=False, latency=0.3))
    env = priced_env(fake_openai, tmp_path, BUDGET_VIDEO_USD="0.1")
    env["SCENE_CONCURRENCY"] = "3"
    system = make_system(env)
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "wide", scenes(9)).status_code == 202
        final = poll_until_done(client, "wide")[-1]
    paid = [i for i in final["images"] if not i["placeholder"]]
    capped = [i for i in final["images"] if i["placeholder"]]
    assert final["status"] == "assets_generated" and len(final["images"]) == 9
    # Room for 2 images (0.08); at most 2 more may be in flight when the cap is reached.
    assert 2 <= len(paid) <= 2 + 2, [i["scene"] for i in paid]
    assert fake_openai.count(MODEL) == len(paid)
    assert all(i["reason"] == "budget" for i in capped) and len(capped) >= 9 - 4
    assert final["spendUsd"] <= 0.1 + 2 * 0.04 + 1e-9
