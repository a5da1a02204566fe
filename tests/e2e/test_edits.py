"""Edited prompts and one-scene regeneration, end to end over the four real processes with
imagegen at the fake OpenAI server: a changed prompt is generated again (paid once per new
prompt), unchanged real images are kept, a regenerate makes a new image under a new URL
version, and bad requests are refused with nothing written or paid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.helpers import MODEL, assert_progress_never_decreased, poll_until_done, post, provider_env, scenes
from tests.fakes.openai_fake import CONTENT_POLICY, FakeOpenAI, Ok
from tools.processes import System

pytestmark = pytest.mark.slow


def urls(answer: dict[str, Any]) -> dict[int, str]:
    return {i["scene"]: i["url"] for i in answer["images"]}


def regenerate(client: httpx.Client, video_id: str, scene: int | str, body: Any = None) -> httpx.Response:
    path = f"/api/videos/{video_id}/scenes/{scene}/regenerate"
    return client.post(path, json=body) if body is not None else client.post(path)


@pytest.fixture
def running(make_system: Callable[..., System], fake_openai: FakeOpenAI) -> System:
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    return system


def test_a_changed_prompt_is_generated_again_and_the_others_are_kept(running: System, fake_openai: FakeOpenAI) -> None:
    with httpx.Client(base_url=running.gateway_url, timeout=10) as client:
        first = scenes(3)
        assert post(client, "edited", first).status_code == 202
        before = poll_until_done(client, "edited")[-1]
        edited = [first[0], {"prompt": "scene 2: the lighthouse at dawn, calm sea"}, first[2]]
        assert post(client, "edited", edited).status_code == 202
        seen = poll_until_done(client, "edited")
        after = seen[-1]
        # Posted again unchanged: nothing more is paid.
        assert post(client, "edited", edited).status_code == 202
        again = poll_until_done(client, "edited")[-1]
    assert_progress_never_decreased(seen)
    assert after["status"] == "assets_generated" and after["progress"] == 100
    assert urls(after)[1] == urls(before)[1] and urls(after)[3] == urls(before)[3]
    assert urls(after)[2] != urls(before)[2], "the edited scene has a new image version"
    assert fake_openai.count(MODEL) == 4
    assert fake_openai.paid.count(edited[1]["prompt"]) == 1
    assert urls(again) == urls(after) and fake_openai.count(MODEL) == 4


def test_regenerate_makes_one_scene_again_with_a_new_url_version(running: System, fake_openai: FakeOpenAI) -> None:
    with httpx.Client(base_url=running.gateway_url, timeout=10) as client:
        post(client, "again", scenes(3))
        before = poll_until_done(client, "again")[-1]
        old_bytes = httpx.get(urls(before)[2], timeout=10).content
        answer = regenerate(client, "again", 2)
        assert answer.status_code == 202, answer.text
        assert answer.json()["videoId"] == "again" and answer.json()["scenes"] == 3
        seen = poll_until_done(client, "again")
        after = seen[-1]
        # With a new prompt in the body: that prompt is kept for the scene from now on.
        new_prompt = "scene 3: the lighthouse seen from a boat"
        assert regenerate(client, "again", 3, {"prompt": new_prompt}).status_code == 202
        third = poll_until_done(client, "again")[-1]
        resumed = client.post("/api/generate-preview-images", json={"videoId": "again"})
        assert resumed.status_code == 202
        final = poll_until_done(client, "again")[-1]
        old_object = httpx.get(urls(before)[2], timeout=10)
        new_object = httpx.get(urls(after)[2], timeout=10)
    assert_progress_never_decreased(seen)
    assert min(s["progress"] for s in seen if not s["degraded"]) == 100, "progress never goes back"
    assert urls(after)[2] != urls(before)[2]
    assert urls(after)[2].split("?")[0] == urls(before)[2].split("?")[0], "the same object, replaced"
    assert old_object.content == new_object.content  # one object: the old version's URL serves the new bytes
    assert new_object.content != old_bytes, "the regenerated scene's image is a new one"
    assert urls(after)[1] == urls(before)[1] and urls(after)[3] == urls(before)[3]
    assert fake_openai.paid.count(scenes(3)[1]["prompt"]) == 2, "a regenerate is a new image, paid once"
    assert fake_openai.paid.count(new_prompt) == 1 and urls(third)[3] != urls(after)[3]
    assert fake_openai.count(MODEL) == 5, "the resume with stored prompts pays for nothing"
    assert urls(final) == urls(third)


def test_a_regenerate_that_gets_a_placeholder_keeps_the_real_image(running: System, fake_openai: FakeOpenAI) -> None:
    with httpx.Client(base_url=running.gateway_url, timeout=10) as client:
        post(client, "keep", scenes(2))
        before = poll_until_done(client, "keep")[-1]
        fake_openai.script(MODEL, CONTENT_POLICY)
        assert regenerate(client, "keep", 1).status_code == 202
        after = poll_until_done(client, "keep")[-1]
    assert fake_openai.count(MODEL) == 3, "the regenerate was tried"
    assert urls(after) == urls(before)
    assert not any(i["placeholder"] for i in after["images"])


def test_a_running_video_answers_409_to_a_regenerate(running: System, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, Ok(latency=1.0))
    with httpx.Client(base_url=running.gateway_url, timeout=10) as client:
        post(client, "busy", scenes(2))
        poll_until_done(client, "busy")
        fake_openai.script(MODEL, Ok(latency=3.0))
        assert regenerate(client, "busy", 1).status_code == 202
        assert fake_openai.wait_for_requests(3)
        conflict = regenerate(client, "busy", 2)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "ALREADY_EXISTS"
        same = regenerate(client, "busy", 1)  # the same regenerate joins the running one
        assert same.status_code == 202 and same.json()["alreadyRunning"] is True
        poll_until_done(client, "busy")
    assert fake_openai.count(MODEL) == 3


def test_bad_regenerates_are_refused_and_nothing_is_written(running: System, fake_openai: FakeOpenAI) -> None:
    with httpx.Client(base_url=running.gateway_url, timeout=10) as client:
        post(client, "bad", scenes(2))
        before = poll_until_done(client, "bad")[-1]
        cases: list[tuple[Any, Any, int, str]] = [
            ("bad", 3, 404, "has no scene 3; its scenes are 1-2"),
            ("bad", 0, 400, "scene"),
            ("bad", "two", 400, "scene"),
            ("bad", 1, 400, "prompt"),  # empty prompt
            ("bad", 1, 400, "unknownField"),  # a field the body does not have
            ("nobody", 1, 404, "no scenes to regenerate"),
            ("bad video!", 1, 400, "videoId"),
        ]
        bodies: list[Any] = [None, None, None, {"prompt": "  "}, {"unknownField": 1}, None, None]
        for (video, scene, code, words), body in zip(cases, bodies, strict=True):
            answer = regenerate(client, video, scene, body)
            assert answer.status_code == code, (video, scene, body, answer.text)
            assert words in answer.text, answer.text
            assert answer.json()["error"]["message"]
        after = client.get("/api/video-status", params={"videoId": "bad"}).json()
        unknown = client.get("/api/video-status", params={"videoId": "nobody"})
    assert fake_openai.count(MODEL) == 2
    assert after["updatedAtMs"] == before["updatedAtMs"] and urls(after) == urls(before)
    assert unknown.status_code == 404


def test_each_regenerate_is_a_new_image(make_system: Callable[..., System], fake_openai: FakeOpenAI) -> None:
    """Regenerated twice, the scene is paid twice: each regenerate asks imagegen for a new
    image (its own variant), never the one its replay cache holds for the prompt."""
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "twice", scenes(1))
        first = poll_until_done(client, "twice")[-1]
        versions = {urls(first)[1]}
        for _ in range(2):
            assert regenerate(client, "twice", 1).status_code == 202
            assert wait_until(
                lambda: (
                    client.get("/api/video-status", params={"videoId": "twice"}).json()["images"][0]["url"]
                    not in versions
                ),
                timeout=30,
            )
            done = poll_until_done(client, "twice")[-1]
            versions.add(urls(done)[1])
    assert fake_openai.count(MODEL) == 3 and len(versions) == 3
