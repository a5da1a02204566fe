"""Progressive previews: how soon a client following a video's event stream sees the first
pixels of each scene. The fake models a real GPT image model at quality low: each final at
4 s, two partial images at 1.3 s and 2.6 s; 30 scenes (9 quick), 3 at a time."""

from __future__ import annotations

import json
import statistics
import threading
import time

import httpx

from bench.bench_pipeline import MODEL, provider_env
from bench.common import Figure, running_system, wait_done
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry, warm_answers

FINAL, PARTIALS = 4.0, (1.3, 2.6)


def _follow(url: str, video: str, seen: dict[str, dict[int, float]], done: threading.Event) -> None:
    """Read the event stream; note when each scene's first preview and its image arrived."""
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=300)) as client,
        client.stream("GET", f"/api/videos/{video}/events") as stream,
    ):
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if event == "end":
                    break
            elif line.startswith("data: "):
                at = time.monotonic()
                data = json.loads(line.removeprefix("data: "))
                if event == "preview":
                    seen["preview"].setdefault(data["scene"], at)
                elif event == "status":
                    for image in data["images"]:
                        seen["final"].setdefault(image["scene"], at)
    done.set()


def previews(quick: bool) -> list[Figure]:
    scenes = 9 if quick else 30
    warm_answers()  # the fake's own image encoding stays out of the runs
    warm_answers(partials=True)
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
        fake.script(MODEL, Ok(latency=FINAL, partial_at=PARTIALS, size=(0, 0)))
        env = provider_env(fake, IMAGEGEN_PARTIAL_IMAGES=str(len(PARTIALS)), IMAGE_GEN_TIMEOUT="60")
        with running_system(env) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as client:
            prompts = [{"prompt": f"scene {n}: a harbour at dawn"} for n in range(1, scenes + 1)]
            seen: dict[str, dict[int, float]] = {"preview": {}, "final": {}}
            done = threading.Event()
            before = len(fake.generation_requests())
            client.post("/api/generate-preview-images", json={"videoId": "previews", "scenes": prompts})
            follower = threading.Thread(target=_follow, args=(system.gateway_url, "previews", seen, done), daemon=True)
            follower.start()
            assert done.wait(scenes / 3 * FINAL + 60), "the stream ended"
            final = wait_done(client, "previews")
            requests = {r.body["prompt"]: r for r in fake.generation_requests()[before:]}
            first_partial = {prompt: at for prompt, index, at, _ in fake.partials if index == 0}
            paid = len(fake.paid) / scenes
    assert final["status"] == "assets_generated" and len(final["images"]) == scenes
    overheads, shares = [], []
    for n, prompt in enumerate((p["prompt"] for p in prompts), start=1):
        started = requests[prompt].at
        overheads.append(seen["preview"][n] - first_partial[prompt])
        shares.append((seen["preview"][n] - started) / (seen["final"][n] - started))
    overhead_ms = statistics.median(overheads) * 1000
    share = statistics.median(shares)
    return [
        Figure(
            f"previews, {scenes} scenes 3 at a time (final 4 s, partials at 1.3 and 2.6 s): the model's first "
            "partial to the follower's first preview of the scene, median",
            round(overhead_ms, 1),
            "ms",
            "<= 150",
            overhead_ms <= 150,
            note=f"max {max(overheads) * 1000:.0f} ms; stored, recorded and pushed",
        ),
        Figure(
            "previews: time to the first preview / time to the scene's image, from its request, median",
            round(share, 3),
            "ratio",
            "<= 0.4",
            share <= 0.4,
            note=f"the model's own: {PARTIALS[0] / FINAL:.3f}",
        ),
        Figure("previews: paid requests per scene", round(paid, 2), "per scene", "== 1.00", paid == 1.0),
    ]
