"""Security, part two, over the real processes: nothing names another user's video on a
degraded path, the event stream included (the status service frozen, on the gateway that
ran the video and on one that never saw it)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.common.objects import ObjectKeys
from tests.conftest import wait_until
from tests.e2e.helpers import poll_until_done, post, scenes
from tests.e2e.test_users import ALICE, BOB, as_user, auth, start, users_env  # noqa: F401  (auth: a fixture)
from tests.fakes.images import image_bytes
from tests.fakes.jwks_fake import FakeAuth
from tests.fakes.openai_fake import FakeOpenAI
from tools.processes import System, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def frozen_status() -> Iterator[Callable[[System], None]]:
    """Freeze a system's status service (SIGSTOP); thawed again at the end whatever happens."""
    frozen: list[System] = []

    def freeze(system: System) -> None:
        system.procs["status"].send_signal(signal.SIGSTOP)
        frozen.append(system)

    yield freeze
    for system in frozen:
        if "status" in system.procs:
            system.procs["status"].send_signal(signal.SIGCONT)


def events(client: httpx.Client, video: str, token: str) -> httpx.Response:
    """The event stream opened as a browser does (the token in the query), read to its first
    event: enough to see whether it opened and what it named."""
    with client.stream("GET", f"/api/videos/{video}/events", params={"access_token": token}) as answer:
        if answer.status_code == 200:
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    break
        answer.read()
        return answer


def test_a_frozen_status_service_never_shows_a_video_to_another_user(
    make_system: Callable[..., System],
    fake_openai: FakeOpenAI,
    auth: FakeAuth,  # noqa: F811
    frozen_status: Callable[[System], None],
) -> None:
    env = users_env(fake_openai, auth, STATUS_TIMEOUT="0.5", HOP_BREAKER_THRESHOLD="2")
    system = make_system(env)
    system.start_all()
    other_port = free_port()
    system.start_replica("gateway-2", "gateway", {"GATEWAY_PORT": str(other_port)}, port=other_port)
    alice, bob = auth.token(ALICE), auth.token(BOB, key=auth.keys[1])
    with (
        httpx.Client(base_url=system.gateway_url, timeout=20) as one,
        httpx.Client(base_url=f"http://127.0.0.1:{other_port}", timeout=20) as two,
    ):
        assert start(one, alice, "leak-1").status_code == 202
        poll_until_done(one, "leak-1", headers=as_user(alice))
        frozen_status(system)
        for _ in range(3):  # enough to open the hop breakers: answers come from memory at once
            one.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(alice))
            two.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(alice))

        # The gateway that ran it remembers whose it is: its owner reads the last known
        # state, marked degraded; the other user gets the 404 of a video that does not exist.
        mine = one.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(alice))
        assert mine.status_code == 200 and mine.json()["degraded"] is True, mine.text
        assert mine.json()["status"] == "assets_generated"
        assert "breaker" in mine.json()["degradedReason"] or "unavailable" in mine.json()["degradedReason"]
        theirs = one.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(bob))
        assert theirs.status_code == 404, theirs.text
        assert theirs.json()["error"]["message"] == "video 'leak-1' does not exist"
        stream = events(one, "leak-1", bob)
        assert stream.status_code == 404 and "leak-1" in stream.json()["error"]["message"]
        assert "assets_generated" not in stream.text

        # A gateway that never saw the video cannot know whose it is: 503 with a Retry-After
        # for every signed-in user, owner included, never a made-up "processing".
        for token in (alice, bob):
            answer = two.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(token))
            assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
            assert answer.json()["error"]["code"] == "UNAVAILABLE" and "processing" not in answer.text
            stream = events(two, "leak-1", token)
            assert stream.status_code == 503 and stream.headers["retry-after"]

        system.procs["status"].send_signal(signal.SIGCONT)

        def answers_again() -> bool:  # once the hop breaker's probe finds the service back
            return two.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(alice)).status_code == 200

        assert wait_until(answers_again, timeout=30)
        healthy = poll_until_done(two, "leak-1", headers=as_user(alice), timeout=30)
        assert healthy[-1]["status"] == "assets_generated"
        after = two.get("/api/video-status", params={"videoId": "leak-1"}, headers=as_user(bob))
        assert after.status_code == 404
        stream = events(two, "leak-1", bob)
        assert stream.status_code == 404 and "images" not in stream.text


def test_degraded_answers_give_users_no_store_detail(make_system: Callable[..., System]) -> None:
    """The status store's own error text (it can name the database host) stays in the logs."""
    system = make_system({"STATUS_STORE": "postgres", "DATABASE_URL": "postgresql://u@127.0.0.1:1/secret-db-host"})
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
        answer = client.get("/api/video-status", params={"videoId": "any"})
        assert answer.status_code == 200 and answer.json()["degraded"] is True
        assert answer.json()["degradedReason"].startswith("status store unavailable")
        assert "secret-db-host" not in answer.text and "127.0.0.1:1" not in answer.text


def test_image_urls_cannot_be_derived_from_a_video_id(make_system: Callable[..., System]) -> None:
    """The bucket is public, but an object's path carries a keyed hash of the video id: the
    path an id alone gives answers 404 whether or not the video exists, and objects stored
    at the earlier paths keep answering."""
    system = make_system({"OBJECT_KEY_SECRET": "object-key-secret-for-the-test"})
    system.start_all()
    prefix = "/storage/v1/object/public/renders-images/videos"
    root = Path(system.env["DATA_DIR"]) / "storage" / "renders-images" / "videos"
    (root / "from-before" / "images").mkdir(parents=True)
    (root / "from-before" / "images" / "scene-1.png").write_bytes(image_bytes("PNG"))
    with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
        for video in ("real-1", "real-2"):
            assert post(client, video, scenes(1)).status_code == 202
            poll_until_done(client, video)
        urls = [
            client.get("/api/video-status", params={"videoId": v}).json()["images"][0]["url"]
            for v in ("real-1", "real-2")
        ]
        keys = [url.split("/videos/")[1].split("/")[1] for url in urls]
        assert keys[0] != keys[1] and all(len(k) == 26 for k in keys)
        key = ObjectKeys(b"object-key-secret-for-the-test").of("real-1")
        assert keys[0] == key, "the key is the keyed hash, as the gateway's secret makes it"
        for url in urls:
            assert client.get(url.removeprefix(system.gateway_url)).status_code == 200
        # What an id alone gives: the same 404 for a real video and a missing one.
        for video in ("real-1", "no-such-video"):
            for guess in (f"{prefix}/{video}/images/scene-1.png", f"{prefix}/{video}/scene-1.png"):
                answer = client.get(guess)
                assert answer.status_code == 404 and answer.json()["error"]["code"] == "NOT_FOUND"
        assert client.get(f"{prefix}/from-before/images/scene-1.png").status_code == 200
