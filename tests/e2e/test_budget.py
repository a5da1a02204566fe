"""Spend per video and budget caps over the real processes: a scene that would cross a cap
gets the placeholder with the reason "budget", the breach is logged once, and caps hold
across a restart because spend lives in the status store."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import logs_of, wait_until
from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes
from tests.e2e.test_users import ALICE, BOB, SERVICE, as_user, users_env
from tests.fakes import openai_fake as fo
from tests.fakes.jwks_fake import FakeAuth
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


def test_two_videos_posted_together_pay_for_no_more_than_the_cap_has_room_for(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    """The case a new user met: room for one image, two 4-scene videos posted together, three
    scenes of each at once. Six images were paid before spend was held in the status store;
    now the holds let exactly one through."""
    fake_openai.script(MODEL, fo.Ok(usage=False, latency=0.3))
    env = priced_env(fake_openai, tmp_path, BUDGET_DAILY_USD="0.05")
    env["SCENE_CONCURRENCY"] = "3"
    system = make_system(env)
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        for video in ("left", "right"):
            assert post(client, video, scenes(4, word=video)).status_code == 202
        finals = [poll_until_done(client, video)[-1] for video in ("left", "right")]
        metrics = client.get("/metrics").text
    system.stop_all()
    images = [i for f in finals for i in f["images"]]
    paid = [i for i in images if not i["placeholder"]]
    assert [f["status"] for f in finals] == ["assets_generated"] * 2 and len(images) == 8
    assert len(paid) == 1 and fake_openai.count(MODEL) == 1
    assert all(i["reason"] == "budget" for i in images if i["placeholder"])
    assert sum(f["spendUsd"] for f in finals) == pytest.approx(0.04)
    assert 'storyshort_gateway_budget_breaches_total{cap="daily"} 1.0' in metrics


def test_four_videos_through_two_workers_stay_within_a_daily_cap_with_room_for_two_images(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI, pg_dsn: str
) -> None:
    """Queue mode: two gateways take the posts, two workers run them (three videos each at
    once, two scenes of each): every hold is made in the one PostgreSQL, so the cap is
    never passed, whichever process pays."""
    from tests.e2e.test_queue import queue_system

    fake_openai.script(MODEL, fo.Ok(usage=False, latency=0.3))
    priced = priced_env(fake_openai, tmp_path)
    system, gateways = queue_system(
        make_system, fake_openai, pg_dsn, IMAGEGEN_PRICES_FILE=priced["IMAGEGEN_PRICES_FILE"], BUDGET_DAILY_USD="0.08"
    )
    clients = [httpx.Client(base_url=url, timeout=10) for url in gateways]
    videos = [f"cap{v}" for v in range(4)]
    for n, video in enumerate(videos):
        assert post(clients[n % 2], video, scenes(3, word=video)).status_code == 202
    finals = [poll_until_done(clients[n % 2], video, timeout=120)[-1] for n, video in enumerate(videos)]
    for client in clients:
        client.close()
    system.stop_all()
    images = [i for f in finals for i in f["images"]]
    paid = [i for i in images if not i["placeholder"]]
    assert [f["status"] for f in finals] == ["assets_generated"] * 4 and len(images) == 12
    assert len(paid) == 2 and fake_openai.count(MODEL) == 2, [(i["scene"], i["provider"]) for i in paid]
    assert all(i["reason"] == "budget" for i in images if i["placeholder"])
    assert sum(f["spendUsd"] for f in finals) == pytest.approx(0.08)
    with psycopg.connect(pg_dsn) as conn:  # every hold released by its report, none left to its ttl
        assert conn.execute("SELECT COUNT(*) FROM preview_spend_holds").fetchone() == (0,)


def test_a_cap_holds_when_imagegen_answers_slower_than_the_scenes_start(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    """SCENE_CONCURRENCY=3 and a video cap with room for two images: the three scenes in
    flight each hold before they are paid, so no third image is bought (before holds, up
    to SCENE_CONCURRENCY - 1 more were)."""
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
    assert len(paid) == 2 and fake_openai.count(MODEL) == 2, [i["scene"] for i in paid]  # room for 0.08
    assert all(i["reason"] == "budget" for i in capped) and len(capped) == 7
    assert final["spendUsd"] == pytest.approx(0.08)


def test_each_user_has_a_share_of_the_daily_cap_and_a_spent_share_refuses_their_starts_only(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    """BUDGET_USER_SHARE over the real processes, with signed-in users: a 0.20 USD day split
    0.5 gives each user 0.10, two images at 0.05. Alice's third and fourth scenes get the
    placeholder (reason budget) and her next start is 429 with Retry-After; Bob's images are
    still paid from the day's other half."""
    fake_openai.script(MODEL, fo.Ok(usage=False))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"per_image": {"*": {"*": 0.05}}}}))
    with FakeAuth() as auth:
        env = users_env(
            fake_openai,
            auth,
            IMAGEGEN_PRICES_FILE=str(prices),
            SCENE_CONCURRENCY="1",
            BUDGET_DAILY_USD="0.2",
            BUDGET_USER_SHARE="0.5",
        )
        system = make_system(env)
        system.start_all()
        alice, bob = as_user(auth.token(ALICE)), as_user(auth.token(BOB))
        with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
            body = {"videoId": "alices", "scenes": scenes(4, "alice")}
            assert client.post("/api/generate-preview-images", json=body, headers=alice).status_code == 202
            hers = poll_until_done(client, "alices", headers=alice)[-1]
            again = client.post(
                "/api/generate-preview-images", json={"videoId": "alices-2", "scenes": scenes(1, "more")}, headers=alice
            )
            body = {"videoId": "bobs", "scenes": scenes(2, "bob")}
            assert client.post("/api/generate-preview-images", json=body, headers=bob).status_code == 202
            his = poll_until_done(client, "bobs", headers=bob)[-1]
            never = client.get("/api/video-status", params={"videoId": "alices-2"}, headers=alice)
            metrics = client.get("/metrics", headers=as_user(SERVICE)).text  # the operator's
    assert [(i["scene"], i["placeholder"], i["reason"]) for i in hers["images"]] == [
        (1, False, ""),
        (2, False, ""),
        (3, True, "budget"),
        (4, True, "budget"),
    ]
    assert hers["spendUsd"] == pytest.approx(0.10)
    assert again.status_code == 429 and again.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(again.headers["Retry-After"]) <= 86_400
    assert never.status_code == 404, "a refused start wrote nothing"
    assert [i["placeholder"] for i in his["images"]] == [False, False], "bob's share is his own"
    assert his["spendUsd"] == pytest.approx(0.10)
    # Paid: alice's first two prompts and bob's two, nothing else.
    assert sorted(fake_openai.paid) == sorted([s["prompt"] for s in scenes(2, "alice") + scenes(2, "bob")])
    # The cap that stopped alice, by the status service's name for it (one name across services).
    assert 'storyshort_gateway_budget_breaches_total{cap="owner"} 1.0' in metrics


def test_the_daily_cap_fails_closed_when_todays_spend_cannot_be_read(
    make_system: Callable[..., System], tmp_path: Path, fake_openai: fo.FakeOpenAI
) -> None:
    """A fresh gateway (no reading of today's spend yet) whose status service freezes between
    a run's start and its first hold: the hold fails and so does the read of today's spend,
    so the scene gets the placeholder (reason budget) and nothing is paid, though the cap has
    room. Once the status service answers, the run is recorded, and the next video is paid."""
    fake_openai.script(MODEL, fo.Ok())
    system = make_system(priced_env(fake_openai, tmp_path, BUDGET_DAILY_USD="10", STATUS_TIMEOUT="2"))
    system.start_all()
    imagegen, status = system.procs["imagegen"], system.procs["status"]
    try:
        with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
            # imagegen frozen: the run's first step after its start (the price quote) waits,
            # so the status service can be frozen before the first hold is asked for.
            imagegen.send_signal(signal.SIGSTOP)
            assert post(client, "closed", scenes(1)).status_code == 202
            status.send_signal(signal.SIGSTOP)
            imagegen.send_signal(signal.SIGCONT)
            felt = wait_until(lambda: "no reading from today" in logs_of(system, "gateway"), 60)
            status.send_signal(signal.SIGCONT)
            assert felt, "the gateway never found today's spend unreadable"
            final = poll_until_done(client, "closed", timeout=90)[-1]
            assert post(client, "open-again", scenes(1, "paid")).status_code == 202
            paid = poll_until_done(client, "open-again", timeout=60)[-1]
    finally:
        for proc in (imagegen, status):
            proc.send_signal(signal.SIGCONT)
    assert [(i["placeholder"], i["reason"]) for i in final["images"]] == [(True, "budget")]
    assert final["status"] == "assets_generated" and not final["degraded"]
    assert [i["placeholder"] for i in paid["images"]] == [False]  # the cap had room all along
    assert fake_openai.paid == [s["prompt"] for s in scenes(1, "paid")]
