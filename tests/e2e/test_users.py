"""StoryShort's own users over the real processes: Supabase access tokens (keys made in the
test, served from a local JWKS endpoint), each user reaching only their own videos on every
route (someone else's answers exactly as a video that does not exist), the operators'
service token reaching all, and per-user limits counted in the status store across two
gateway replicas."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.browser import chromium
from tests.e2e.helpers import MODEL, poll_until_done, provider_env, scenes
from tests.fakes.jwks_fake import FakeAuth
from tests.fakes.openai_fake import FakeOpenAI
from tools.processes import System, free_port

pytestmark = pytest.mark.slow
SERVICE = "operator-service-token-0123456789"
ALICE, BOB = "a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002"


@pytest.fixture
def auth() -> Iterator[FakeAuth]:
    with FakeAuth() as fake:
        yield fake


def users_env(fake_openai: FakeOpenAI, auth: FakeAuth, **extra: str) -> dict[str, str]:
    return provider_env(
        fake_openai.base_url,
        AUTH_REQUIRED="true",
        AUTH_JWKS_URL=auth.jwks_url,
        AUTH_ISSUER=auth.issuer,
        GATEWAY_API_KEY=SERVICE,
        **extra,
    )


def as_user(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(client: httpx.Client, token: str, video: str, n: int = 2) -> httpx.Response:
    return client.post(
        "/api/generate-preview-images", json={"videoId": video, "scenes": scenes(n)}, headers=as_user(token)
    )


def every_route(client: httpx.Client, video: str, headers: dict[str, str]) -> dict[str, httpx.Response]:
    answers = {
        "status": client.get("/api/video-status", params={"videoId": video}, headers=headers),
        "events": client.get(f"/api/videos/{video}/events", headers=headers),
        "page": client.get(f"/videos/{video}", headers=headers),
        "resume": client.post("/api/generate-preview-images", json={"videoId": video}, headers=headers),
        "regenerate": client.post(f"/api/videos/{video}/scenes/1/regenerate", headers=headers),
    }
    return answers


def test_each_user_reaches_only_their_own_videos(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, auth: FakeAuth
) -> None:
    system = make_system(users_env(fake_openai, auth))
    system.start_all()
    alice, bob = auth.token(ALICE), auth.token(BOB, key=auth.keys[1])
    with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
        assert start(client, alice, "alices").status_code == 202
        assert start(client, bob, "bobs").status_code == 202
        poll_until_done(client, "alices", headers=as_user(alice))
        poll_until_done(client, "bobs", headers=as_user(bob))
        paid = fake_openai.count(MODEL)

        strangers = every_route(client, "bobs", as_user(alice))
        nowhere = every_route(client, "nobody-has-this", as_user(alice))
        for route, answer in strangers.items():
            # 404 (a resume without scenes: the 400 that says there is no video to resume).
            assert answer.status_code == (400 if route == "resume" else 404), (route, answer.text)
            # No probing: someone else's video reads exactly like one that does not exist.
            assert answer.json() == json.loads(nowhere[route].text.replace("nobody-has-this", "bobs")), route
        # A start with scenes: a new id is the caller's to create; someone else's is the same 404.
        taken = start(client, alice, "bobs")
        assert taken.status_code == 404 and taken.json() == strangers["status"].json()
        assert fake_openai.count(MODEL) == paid, "nothing was generated for a stranger"

        own = client.get("/api/video-status", params={"videoId": "alices"}, headers=as_user(alice))
        assert own.status_code == 200 and own.json()["status"] == "assets_generated"
        page = client.get("/videos/alices", params={"access_token": alice})
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
        events = client.get("/api/videos/alices/events", params={"access_token": alice})
        assert events.status_code == 200 and "event: end" in events.text

        anonymous = every_route(client, "bobs", {})
        anonymous["start"] = client.post("/api/generate-preview-images", json={"videoId": "x", "scenes": scenes(1)})
        for route, answer in anonymous.items():
            assert answer.status_code == 401, (route, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
        expired = auth.token(ALICE, expires_in=-600)
        assert (
            client.get("/api/video-status", params={"videoId": "alices"}, headers=as_user(expired)).status_code == 401
        )

        operator = as_user(SERVICE)
        for video in ("alices", "bobs"):
            assert client.get("/api/video-status", params={"videoId": video}, headers=operator).status_code == 200
        assert client.post("/api/videos/bobs/scenes/1/regenerate", headers=operator).status_code == 202
        poll_until_done(client, "bobs", headers=operator)
        # The operator's regenerate leaves the video Bob's.
        assert client.get("/api/video-status", params={"videoId": "bobs"}, headers=as_user(bob)).status_code == 200


def test_a_users_videos_per_hour_hold_across_two_gateway_replicas(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, auth: FakeAuth
) -> None:
    system = make_system(users_env(fake_openai, auth, USER_VIDEOS_PER_HOUR="2"))
    system.start_all()
    second = free_port()
    system.start_replica("gateway-2", "gateway", {"GATEWAY_PORT": str(second)}, port=second)
    alice, bob = auth.token(ALICE), auth.token(BOB)
    with (
        httpx.Client(base_url=system.gateway_url, timeout=20) as one,
        httpx.Client(base_url=f"http://127.0.0.1:{second}", timeout=20) as two,
    ):
        assert start(one, alice, "l1").status_code == 202
        assert start(two, alice, "l2").status_code == 202
        for video in ("l1", "l2"):
            poll_until_done(one, video, headers=as_user(alice))
        paid = fake_openai.count(MODEL)
        third = start(one, alice, "l3")
        fourth = start(two, alice, "l4")
        assert start(two, bob, "l5").status_code == 202  # Bob's own count
        poll_until_done(two, "l5", headers=as_user(bob))
        missing = one.get("/api/video-status", params={"videoId": "l3"}, headers=as_user(alice))
    for refused in (third, fourth):
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["reason"] == "USER_LIMIT"
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert missing.status_code == 404, "nothing written for a refused start"
    assert fake_openai.count(MODEL) == paid + 2, "only Bob's two scenes were paid after the refusals"


def test_the_video_page_follows_a_users_video_in_a_real_browser(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, auth: FakeAuth
) -> None:
    system = make_system(users_env(fake_openai, auth))
    system.start_all()
    alice = auth.token(ALICE)
    with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
        assert start(client, alice, "paged", 3).status_code == 202
    with chromium() as page:
        page.open(f"{system.gateway_url}/videos/paged?access_token={alice}", 1024)
        assert page.wait_for("document.body.dataset.stream === 'ended'", timeout=60)
        assert page.evaluate("document.getElementById('scenes').dataset.status") == "assets_generated"
        assert page.evaluate("document.querySelectorAll('figure img').length") == 3
        # Every image loaded under the page's Content-Security-Policy.
        assert page.wait_for(
            "[...document.querySelectorAll('figure img')].every(i => i.complete && i.naturalWidth > 0)"
        )
