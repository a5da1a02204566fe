"""The scene pipeline end to end: four real processes, imagegen pointed at the fake OpenAI
server (and storage, where a test needs faults, at the fake Supabase)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.browser import chromium
from tests.conftest import rpcs
from tests.e2e.helpers import MODEL, assert_progress_never_decreased, poll_until_done, post, provider_env, scenes
from tests.fakes import supabase_fake as sf
from tests.fakes.images import noisy_png
from tests.fakes.openai_fake import CONTENT_POLICY, FakeOpenAI, Ok
from tools.processes import ROOT, System, free_port

pytestmark = pytest.mark.slow


def test_ten_scene_video_is_stored_with_each_scene_paid_once(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.1, size=(0, 0)))
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "ten", scenes(10)).status_code == 202
        seen = poll_until_done(client, "ten")
    assert_progress_never_decreased(seen)
    final = seen[-1]
    assert final["status"] == "assets_generated" and final["progress"] == 100
    assert [i["scene"] for i in final["images"]] == list(range(1, 11))
    assert all(i["provider"] == MODEL and not i["placeholder"] for i in final["images"])
    for image in final["images"]:
        got = httpx.get(image["url"], timeout=10)
        assert got.status_code == 200
        with Image.open(io.BytesIO(got.content)) as decoded:
            assert decoded.size == (1024, 1024)
    assert fake_openai.count(MODEL) == 10
    assert fake_openai.max_in_flight[MODEL] <= 3  # SCENE_CONCURRENCY at the provider, no more
    # One status call starts the run and the last scene's report carries its end.
    assert [rpcs(system, "status", m) for m in ("StartVideo", "ReportScene", "UpdateVideo")] == [1, 10, 0]
    summary = final["summary"]
    assert (summary["generated"], summary["placeholders"], summary["failed"], summary["providerAttempts"]) == (
        10,
        0,
        0,
        10,
    )
    assert "KEY" not in final  # nothing secret in answers
    # No price table: what these images cost is unknown, and said so (null), never 0.
    assert all(i["costUsd"] is None for i in final["images"])
    assert final["spendUsd"] is None and summary["spendUsd"] is None and summary["unpricedImages"] == 10


def test_imagegen_killed_mid_run_the_remaining_scenes_get_placeholders(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.6))
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "killed", scenes(9)).status_code == 202
        assert fake_openai.wait_for_requests(3, timeout=20)
        system.procs["imagegen"].send_signal(signal.SIGKILL)
        seen = poll_until_done(client, "killed")
    final = seen[-1]
    assert final["status"] == "assets_generated"
    assert len(final["images"]) == 9
    assert all(i["placeholder"] == (i["provider"] != MODEL) for i in final["images"])
    # Every scene that never reached the model (imagegen was gone) got the gateway's own
    # placeholder, saying why; at most the three in flight can differ.
    asked = {r.body["prompt"] for r in fake_openai.generation_requests()}
    prompts = {n: s["prompt"] for n, s in enumerate(scenes(9), start=1)}
    never_asked = [i for i in final["images"] if prompts[i["scene"]] not in asked]
    assert len(never_asked) >= 9 - 3 - 1, sorted(asked)  # (one more may have gone out as it died)
    for image in never_asked:
        assert (image["provider"], image["reason"]) == ("gateway-placeholder", "imagegen unavailable"), image


def test_status_service_stopped_the_status_endpoint_still_answers_200_degraded(
    make_system: Callable[..., System],
) -> None:
    system = make_system()
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "known", scenes(2))
        poll_until_done(client, "known")
        system.stop("status")
        answer = client.get("/api/video-status", params={"videoId": "known"})
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["degraded"] is True and body["status"] == "assets_generated" and body["progress"] == 100
        unknown = client.get("/api/video-status", params={"videoId": "unknown"})
        assert unknown.status_code == 200
        assert unknown.json()["degraded"] is True and unknown.json()["status"] == "processing"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["services"]["status"] != "SERVING"


def test_storage_failing_fails_the_video_and_the_resume_pays_for_no_scene_twice(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    with sf.FakeSupabase() as supabase:
        supabase.inject("upload", sf.UNAVAILABLE)
        env = provider_env(
            fake_openai.base_url,
            STORAGE_BACKEND="supabase",
            SUPABASE_URL=supabase.url,
            SUPABASE_SERVICE_ROLE_KEY=supabase.key,
        )
        system = make_system(env)
        system.start_all()
        with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
            assert post(client, "flaky", scenes(4)).status_code == 202
            failed = poll_until_done(client, "flaky")[-1]
            assert failed["status"] == "failed"
            assert "could not be stored" in failed["error"]
            assert [f["scene"] for f in failed["failedScenes"]] == [1, 2, 3, 4]
            assert fake_openai.count(MODEL) == 4

            supabase.inject("upload", sf.Pass())
            again = post(client, "flaky", scenes(4))
            assert again.status_code == 202 and again.json()["alreadyRunning"] is False
            done = poll_until_done(client, "flaky")[-1]
        assert done["status"] == "assets_generated" and len(done["images"]) == 4
        assert fake_openai.count(MODEL) == 4, "a scene was paid for twice"
        for image in done["images"]:
            assert httpx.get(image["url"], timeout=10).status_code == 200


def test_a_finished_video_posted_again_generates_nothing(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "twice", scenes(3))
        poll_until_done(client, "twice")
        post(client, "twice", scenes(3))
        final = poll_until_done(client, "twice")[-1]
    assert final["status"] == "assets_generated" and len(final["images"]) == 3
    assert fake_openai.count(MODEL) == 3


def test_two_posts_at_once_for_one_video_start_one_run(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.3))
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        threads = [threading.Thread(target=lambda: answers.append(post(client, "race", scenes(4)))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a.status_code for a in answers) == [202, 202]
        assert sorted(a.json()["alreadyRunning"] for a in answers) == [False, True]
        conflict = post(client, "race", scenes(4, word="different"))
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "ALREADY_EXISTS"
        assert "different scenes" in conflict.json()["error"]["message"]
        poll_until_done(client, "race")
    assert fake_openai.count(MODEL) == 4


def test_the_video_page_shows_progress_and_images_in_a_real_browser(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    # Two scenes get the provider's image, two are refused and get the placeholder.
    fake_openai.script(MODEL, Ok(), Ok(), CONTENT_POLICY)
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "paged", scenes(4))
        poll_until_done(client, "paged")
    with chromium() as page:
        for width in (360, 768, 1280):
            page.open(f"{system.gateway_url}/videos/paged", width)
            assert page.wait_for("document.getElementById('scenes').dataset.status === 'assets_generated'")
            assert page.evaluate("document.querySelector('.bar').getAttribute('aria-valuenow')") == "100"
            assert page.wait_for(  # the bar is drawn full (once its transition ends)
                "document.getElementById('fill').getBoundingClientRect().width >= "
                "document.querySelector('.bar').getBoundingClientRect().width - 1"
            )
            assert page.evaluate("document.getElementById('state').textContent") == "assets_generated · 100%"
            assert page.evaluate("document.querySelectorAll('figure img').length") == 4
            badges = page.evaluate(
                "[...document.querySelectorAll('.badge')]"
                ".map(b => [b.textContent, getComputedStyle(b).backgroundColor])"
            )
            assert sorted(text for text, _ in badges) == [MODEL, MODEL, "placeholder", "placeholder"]
            colours = {text: colour for text, colour in badges}
            assert colours[MODEL] != colours["placeholder"]  # a provider's image does not look like a placeholder
            # Every caption stays on one line: "Scene 1" never wraps, however long the badge.
            wrapped = page.evaluate(
                "[...document.querySelectorAll('figcaption')].filter(c => "
                "c.getBoundingClientRect().height > 1.8 * parseFloat(getComputedStyle(c).fontSize)).length"
            )
            assert wrapped == 0, f"{wrapped} captions wrap at {width} px"
            page.screenshot(Path(system.env["DATA_DIR"]) / f"page-{width}.png")


def test_the_video_page_shows_each_scenes_prompt_and_a_preview_before_its_image(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    """Each scene's card shows its prompt from the start, the partial image the model streams
    as a preview while it works, then the scene's image, in a real browser."""
    fake_openai.script(MODEL, Ok(latency=2.5, partial_at=(0.3,), size=(0, 0)))
    system = make_system(provider_env(fake_openai.base_url, SCENE_CONCURRENCY="1", IMAGEGEN_PARTIAL_IMAGES="1"))
    system.start_all()
    prompts = [{"prompt": "A lighthouse keeper climbs the stairs </script><b>at dusk</b>"}, {"prompt": "A fox in snow"}]
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client, chromium() as page:
        assert post(client, "previewed", prompts).status_code == 202
        page.open(f"{system.gateway_url}/videos/previewed", 1280)
        shown = page.wait_for("[...document.querySelectorAll('figure .prompt')].map(p => p.textContent)")
        assert shown == [p["prompt"] for p in prompts], "the prompts, as text, from the start"
        assert page.evaluate("document.querySelectorAll('b').length") == 0, "a prompt is never markup"
        # One scene at a time (which goes first is imagegen's lane's choice): the one being
        # made shows its preview, loaded, while it has no image yet.
        scene, preview = page.wait_for(
            "(f => f && f.querySelector('img').complete && f.querySelector('img').naturalWidth > 0"
            " && [Number(f.dataset.scene), f.querySelector('img').src])"
            "(document.querySelector('figure[data-state=\"preview\"]'))",
            timeout=15,
        )
        assert f"/preview-{scene}.png" in preview
        assert page.wait_for("document.getElementById('scenes').dataset.status === 'assets_generated'", timeout=30)
        states = page.evaluate(
            "[...document.querySelectorAll('figure')].map(f => [f.dataset.state, f.querySelector('img').src])"
        )
        assert [state for state, _ in states] == ["stored", "stored"]
        assert all("/scene-" in src and "/preview-" not in src for _, src in states), states
        page.screenshot(Path(system.env["DATA_DIR"]) / "page-previews.png")


def test_make_demo_follows_the_gateways_port_and_prints_the_table(make_system: Callable[..., System]) -> None:
    system = make_system()  # on free ports, not 8080
    system.start_all()
    done = subprocess.run(
        ["make", "--no-print-directory", "demo"],
        env={**os.environ, "GATEWAY_PORT": str(system.port("gateway"))},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "100% assets_generated" in done.stdout
    rows = [line for line in done.stdout.splitlines() if "/scene-" in line and "/videos/" in line]
    assert len(rows) == 10


def test_a_four_and_a_half_mib_image_goes_through_and_back_out_byte_for_byte(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.images import noisy_png

    big = noisy_png(int(4.5 * 1024 * 1024))
    assert len(big) > 4.5 * 1024 * 1024 - 4096
    fake_openai.script(MODEL, Ok(payload=big))
    system = make_system(provider_env(fake_openai.base_url))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "big", scenes(1))
        final = poll_until_done(client, "big")[-1]
    assert final["status"] == "assets_generated" and final["images"][0]["provider"] == MODEL
    assert httpx.get(final["images"][0]["url"], timeout=10).content == big


def test_image_urls_follow_the_gateways_address_of_the_moment(make_system: Callable[..., System]) -> None:
    system = make_system()
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "moved", scenes(2))
        first = poll_until_done(client, "moved")[-1]
    assert all(i["url"].startswith(system.gateway_url + "/storage/v1/object/public/") for i in first["images"])
    moved = free_port()  # the gateway moves to another address; earlier links must still work
    system.start_replica(
        "gateway-2", "gateway", {"GATEWAY_PORT": str(moved), "PUBLIC_BASE_URL": f"http://127.0.0.1:{moved}"}, port=moved
    )
    answer = httpx.get(f"http://127.0.0.1:{moved}/api/video-status", params={"videoId": "moved"}, timeout=10).json()
    before = {i["scene"]: i["url"] for i in first["images"]}
    for image in answer["images"]:
        assert image["url"] == before[image["scene"]].replace(system.gateway_url, f"http://127.0.0.1:{moved}")
        assert "?v=" in image["url"]  # the version is kept
        assert httpx.get(image["url"], timeout=10).status_code == 200


def test_a_video_resumes_with_its_stored_prompts_when_no_scenes_are_given(make_system: Callable[..., System]) -> None:
    system = make_system()
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "again", scenes(3)).status_code == 202
        poll_until_done(client, "again")
        resumed = client.post("/api/generate-preview-images", json={"videoId": "again"})
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["scenes"] == 3
        final = poll_until_done(client, "again")[-1]
        assert final["status"] == "assets_generated" and len(final["images"]) == 3
        unknown = client.post("/api/generate-preview-images", json={"videoId": "never-posted", "scenes": []})
        assert unknown.status_code == 400
        assert "no video 'never-posted' to resume" in unknown.json()["error"]["message"]


def test_beyond_the_running_limit_videos_wait_in_order_and_a_full_line_is_429(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.5))
    system = make_system(provider_env(fake_openai.base_url, MAX_RUNNING_VIDEOS="1", MAX_WAITING_VIDEOS="1"))
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        first = post(client, "first", scenes(2))
        second = post(client, "second", scenes(2))
        third = post(client, "third", scenes(2))
        assert (first.status_code, first.json()["status"]) == (202, "generating_images")
        assert (second.status_code, second.json()["status"]) == (202, "queued")
        waiting = client.get("/api/video-status", params={"videoId": "second"}).json()
        assert (waiting["status"], waiting["queuePosition"]) == ("queued", 1)
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "RESOURCE_EXHAUSTED" and int(third.headers["retry-after"]) >= 1
        assert poll_until_done(client, "first")[-1]["status"] == "assets_generated"
        assert poll_until_done(client, "second")[-1]["status"] == "assets_generated"
        missing = client.get("/api/video-status", params={"videoId": "third"})
        assert missing.status_code == 404  # refused: nothing was kept
    assert sorted(fake_openai.paid) == sorted([s["prompt"] for s in scenes(2)] * 2)


def test_an_image_larger_than_the_bucket_allows_is_reencoded_and_the_scene_finishes(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    """The app's bucket allows 300 kB; the model answers 900 kB PNGs. Every scene is stored,
    re-encoded at the same pixel size, and the result says so; each is paid once."""
    big = noisy_png(900_000)
    fake_openai.script(MODEL, Ok(payload=big))
    limit = 300_000
    with sf.FakeSupabase() as supabase:
        supabase.add_bucket("renders-images", file_size_limit=limit, types=["image/png", "image/jpeg", "image/webp"])
        env = provider_env(
            fake_openai.base_url,
            STORAGE_BACKEND="supabase",
            SUPABASE_URL=supabase.url,
            SUPABASE_SERVICE_ROLE_KEY=supabase.key,
        )
        system = make_system(env)
        system.start_all()
        with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
            assert post(client, "large", scenes(2)).status_code == 202
            done = poll_until_done(client, "large")[-1]
        stored = {key: value for key, value in supabase.objects.items() if key[0] == "renders-images"}
    assert done["status"] == "assets_generated", done
    assert [i["reencoded"] for i in done["images"]] == [True, True]
    assert all(not i["placeholder"] for i in done["images"])
    assert fake_openai.count(MODEL) == 2
    with Image.open(io.BytesIO(big)) as original:
        size = original.size
    assert len(stored) == 2
    for data, content_type in stored.values():
        assert len(data) <= limit and content_type in ("image/webp", "image/jpeg")
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.size == size, "same pixel size"
    assert {i["url"].split("?")[0].rsplit(".", 1)[1] for i in done["images"]} <= {"webp", "jpg", "jpeg"}
