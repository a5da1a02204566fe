"""Progress pushed: the event stream (Server-Sent Events) over the real processes, followed
on the gateway that runs the video, on another replica, and with RUNS=queue; POST with
`Prefer: wait=N` and the earlier route's per-scene results."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.schemas import GenerateWaitedOut, VideoStatusOut
from tests.conftest import metric, wait_until
from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes
from tests.e2e.test_queue import queue_system
from tests.fakes.openai_fake import CONTENT_POLICY, FakeOpenAI, Ok
from tools.processes import System, free_port

pytestmark = pytest.mark.slow


def read_events(client: httpx.Client, video_id: str) -> tuple[list[tuple[str, Any]], int]:
    """The stream to its end: (event, data) pairs, and how many heartbeats came."""
    seen: list[tuple[str, Any]] = []
    heartbeats = 0
    with client.stream("GET", f"/api/videos/{video_id}/events", timeout=httpx.Timeout(10, read=30)) as stream:
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        event = ""
        for line in stream.iter_lines():
            if line.startswith(": heartbeat"):
                heartbeats += 1
            elif line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                seen.append((event, json.loads(line.removeprefix("data:"))))
    return seen, heartbeats


def scenes_of(answer: dict[str, Any]) -> set[int]:
    return {image["scene"] for image in answer["images"]}


def check_story(seen: list[tuple[str, Any]], scene_count: int) -> list[dict[str, Any]]:
    names = [name for name, _ in seen]
    assert names[-1] == "end" and set(names[:-1]) <= {"status", "preview"}, names
    answers = [data for name, data in seen if name == "status"]
    # A scene's previews (IMAGEGEN_PARTIAL_IMAGES) come before its image, and none is left at the end.
    for at, (name, data) in enumerate(seen):
        if name == "preview":
            stored = next(i for i, (n, d) in enumerate(seen) if n == "status" and data["scene"] in scenes_of(d))
            assert at < stored, (data, seen[stored])
    assert answers[-1]["previews"] == []
    progress = [a["progress"] for a in answers]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert answers[-1]["status"] == "assets_generated" and answers[-1]["progress"] == 100
    assert len(answers[-1]["images"]) == scene_count
    assert all(a != b for a, b in itertools.pairwise(answers)), "an unchanged answer was sent again"
    return answers


def test_the_stream_pushes_each_change_and_ends_with_the_run(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.5))
    system = make_system(provider_env(fake_openai.base_url, SCENE_CONCURRENCY="1", EVENTS_HEARTBEAT="0.2"))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "pushed", scenes(3)).status_code == 202
        seen, heartbeats = read_events(client, "pushed")
        # A finished video: its answer once, then the end.
        again, _ = read_events(client, "pushed")
    answers = check_story(seen, 3)
    # One scene at a time: each stored image is its own step (0, 33, 66, 100).
    assert list(dict.fromkeys(a["progress"] for a in answers if a["progress"]))[:3] == [33, 66, 100]
    assert [name for name, _ in seen].count("preview") == 3, "each scene's one partial, pushed once"
    assert heartbeats >= 1, "half-second gaps between images carry heartbeats every 0.2 s"
    assert [name for name, _ in again] == ["status", "end"] and again[0][1]["progress"] == 100


def test_a_stream_on_another_replica_follows_a_run_it_does_not_hold(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.4))
    system = make_system(provider_env(fake_openai.base_url, SCENE_CONCURRENCY="1", EVENTS_POLL_EVERY="0.1"))
    system.start_all()
    second = free_port()
    system.start_replica("gateway-2", "gateway", {"GATEWAY_PORT": str(second)}, port=second)
    with (
        httpx.Client(base_url=system.gateway_url, timeout=10) as one,
        httpx.Client(base_url=f"http://127.0.0.1:{second}", timeout=10) as two,
    ):
        assert post(one, "elsewhere", scenes(3)).status_code == 202
        seen, _ = read_events(two, "elsewhere")
    answers = check_story(seen, 3)
    assert len({a["progress"] for a in answers}) >= 3, "the replica saw the run's steps, not only its end"


def test_the_stream_follows_queue_workers(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, pg_dsn: str
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.3))
    system, gateways = queue_system(make_system, fake_openai, pg_dsn)
    with httpx.Client(base_url=gateways[0], timeout=10) as one, httpx.Client(base_url=gateways[1], timeout=10) as two:
        assert post(one, "queued", scenes(4)).status_code == 202
        seen, _ = read_events(two, "queued")
    check_story(seen, 4)
    assert fake_openai.count(MODEL) == 4
    # The runs happen in the workers, and their series are served there.
    runs = sum(
        metric(f"http://127.0.0.1:{system.env[f'WORKER_{n}_METRICS_PORT']}/metrics", "storyshort_gateway_runs_total")
        for n in (1, 2)
    )
    assert runs == 1


def test_a_stream_for_a_video_that_does_not_exist_is_refused(make_system: Callable[..., System]) -> None:
    system = make_system()
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        unknown = client.get("/api/videos/nobody/events")
        bad = client.get("/api/videos/bad%20id!/events")
        assert client.get("/api/video-status", params={"videoId": "nobody"}).status_code == 404
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    assert bad.status_code == 400 and "videoId" in bad.json()["error"]["message"]


def test_prefer_wait_answers_the_per_scene_results_of_the_earlier_route(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(), CONTENT_POLICY, Ok())
    system = make_system(provider_env(fake_openai.base_url, SCENE_CONCURRENCY="1", PREFER_WAIT_MAX="30"))
    system.start_all()
    body = {"videoId": "waited", "scenes": [{"prompt": p["prompt"], "index": i} for i, p in enumerate(scenes(3))]}
    with httpx.Client(base_url=system.gateway_url, timeout=60) as client:
        done = client.post("/api/generate-preview-images", json=body, headers={"Prefer": "respond-async, wait=120"})
        status = client.get("/api/video-status", params={"videoId": "waited"}).json()
    assert done.status_code == 200, done.text
    assert done.headers["preference-applied"] == "wait=30", "the wait is capped by PREFER_WAIT_MAX"
    answer = done.json()
    assert answer["status"] == "assets_generated" and answer["progress"] == 100
    results = answer["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    # One request of three was refused (which scene's depends on arrival order).
    assert sorted(r["isPlaceholder"] for r in results) == [False, False, True]
    assert all(r["success"] and r["url"].startswith("http") for r in results)
    assert answer["placeholdersUsed"] == 1
    # Both answers are what the OpenAPI document declares (the typed client is generated from it).
    assert GenerateWaitedOut.model_validate(answer).model_dump(exclude_unset=True) == answer
    assert VideoStatusOut.model_validate(status).model_dump(exclude_unset=True) == status
    # The status answer carries the earlier names too, and they agree with the results.
    assert [(i["index"], i["success"], i["isPlaceholder"], i["url"]) for i in status["images"]] == [
        (r["index"], True, r["isPlaceholder"], r["url"]) for r in results
    ]


def test_prefer_wait_shorter_than_the_run_answers_202_and_a_bad_one_400(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=2.0))
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
        body = {"videoId": "slow", "scenes": scenes(2)}
        early = client.post("/api/generate-preview-images", json=body, headers={"Prefer": "wait=0.5"})
        bad = client.post(
            "/api/generate-preview-images", json={**body, "videoId": "other"}, headers={"Prefer": "wait=soon"}
        )
        poll_until_done(client, "slow")
        never = client.get("/api/video-status", params={"videoId": "other"})
    assert early.status_code == 202 and early.headers["preference-applied"] == "wait=0.5"
    assert early.json()["status"] == "generating_images"
    assert bad.status_code == 400 and "wait=N" in bad.json()["error"]["message"]
    assert never.status_code == 404, "a refused POST starts nothing"


def is_end(line: str) -> bool:
    return line.startswith("event:") and line.removeprefix("event:").strip() == "end"


def test_a_gateway_at_its_most_streams_answers_503_and_takes_one_again_when_one_ends(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=1.0))
    system = make_system(provider_env(fake_openai.base_url, EVENTS_MAX_FOLLOWERS="1"))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "crowded", scenes(2)).status_code == 202
        with client.stream("GET", "/api/videos/crowded/events", timeout=httpx.Timeout(10, read=30)) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            assert next(x for x in lines if x.startswith("event:")).removeprefix("event:").strip() == "status"
            refused = client.get("/api/videos/crowded/events")
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "UNAVAILABLE" and "poll /api/video-status" in error["message"]
            assert int(refused.headers["retry-after"]) >= 1
            assert client.get("/api/video-status", params={"videoId": "crowded"}).status_code == 200  # polling works
            assert any(is_end(x) for x in lines), "the first stream ran to its end"

        def taken_again() -> bool:
            with client.stream("GET", "/api/videos/crowded/events", timeout=httpx.Timeout(10, read=30)) as again:
                if again.status_code == 503:
                    return False
                assert again.status_code == 200
                return any(
                    x.startswith("event:") and x.removeprefix("event:").strip() == "end" for x in again.iter_lines()
                )

        assert wait_until(taken_again, timeout=10, every=0.1), "a place freed by a stream that ended is taken again"
