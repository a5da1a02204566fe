"""Whole-pipeline benchmarks over the four real processes, the fake OpenAI server as provider."""

from __future__ import annotations

import math
import signal
import statistics
import time

import httpx

from bench.common import Figure, median, peak_rss_mib, running_system, wait_done
from tests.fakes.openai_fake import FakeOpenAI, Flaky, Ok, Request, model_entry, warm_answers

MODEL = "gpt-image-2"


def provider_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-bench-0000000000", "OPENAI_BASE_URL": fake.base_url, "IMAGEGEN_CHAIN": MODEL, **extra}


def story(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"scene {i}: a harbour at dawn"} for i in range(1, n + 1)]


def seen_done_over_events(url: str, video_id: str, timeout: float = 120) -> None:
    """Follow the video's event stream (as the video page does) until its `end` event."""
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=timeout)) as client,
        client.stream("GET", f"/api/videos/{video_id}/events") as stream,
    ):
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event: end"):
                return
    raise AssertionError(f"the stream of {video_id} ended without its end event")


def timeline(requests: list[Request], posted: float, seen: float, lanes: int, latency: float) -> dict[str, float]:
    """Where one run's time beyond the provider's goes, from the provider's own record (every
    process here reads the same monotonic clock), along the lane that ends last: POST to the
    run's first request, then to that lane's first request (the start's spread), the gaps
    between an answer and the next request on the lane it freed, the provider's time beyond
    its latency, and the last answer to the client's `end`. They add up to the run's whole
    time less `latency` per request of that lane."""
    arrivals = sorted(r.at for r in requests)
    answers = sorted(r.answered for r in requests)
    # The k-th request out went on the lane that the (k - lanes)-th answer freed.
    gaps = [arrivals[k] - answers[k - lanes] for k in range(lanes, len(arrivals))]
    # The lane that ends last: its requests are every `lanes`-th one counting back from the end.
    chain = list(range(len(arrivals) - 1, -1, -lanes))
    last_lane = [arrivals[k] - answers[k - lanes] for k in chain[:-1]]
    provider = sum(answers[k] - arrivals[k] for k in chain) - len(chain) * latency
    first, spread, end = arrivals[0] - posted, arrivals[chain[-1]] - arrivals[0], seen - answers[-1]
    return {
        "first_ms": first * 1000,
        "spread_ms": spread * 1000,
        "gap_ms": statistics.median(gaps) * 1000,
        "gaps_ms": sum(last_lane) * 1000,
        "provider_ms": provider * 1000,
        "end_ms": end * 1000,
        "beyond_ms": (first + spread + sum(last_lane) + provider + end) * 1000,
    }


STAGES = ("first_ms", "spread_ms", "gap_ms", "gaps_ms", "provider_ms", "end_ms")


def describe(stage: dict[str, float]) -> str:
    return (
        f"first request {stage['first_ms']:.1f}, spread {stage['spread_ms']:.1f}, gap {stage['gap_ms']:.2f} "
        f"(sum {stage['gaps_ms']:.1f}), provider {stage['provider_ms']:.1f}, end {stage['end_ms']:.1f}"
    )


def one_video(
    fake: FakeOpenAI, client: httpx.Client, video_id: str, n: int, lanes: int = 3, latency: float = 0.2
) -> tuple[float, dict[str, float]]:
    """Post a video of ``n`` scenes and follow its event stream to the end: the seconds from
    the POST to the end seen (client side), and the run's `timeline`."""
    first = len(fake.generation_requests())
    started, at = time.perf_counter(), time.monotonic()
    client.post("/api/generate-preview-images", json={"videoId": video_id, "scenes": story(n)})
    seen_done_over_events(str(client.base_url), video_id)
    seconds = time.perf_counter() - started
    return seconds, timeline(fake.generation_requests()[first:], at, time.monotonic(), lanes, latency)


def pipeline(quick: bool) -> list[Figure]:
    """N=30 scenes, concurrency 3, provider latency 200 ms, against ceil(N/3) x 200 ms;
    paid requests per scene on a healthy run and on a run interrupted mid-way and resumed.

    The goal is judged on what a user sees: from the client's side of the POST to the moment
    the client, following the video's event stream, has its end. Beside it, the wall time
    from the POST to the final status recorded (the status answer's updatedAtMs; same
    machine, same clock), and what a client polling every 10 ms sees (a poller's own delay,
    half a period and one GET on average, included)."""
    n, latency, repeats = 30, 0.2, (3 if quick else 5)
    ideal = math.ceil(n / 3) * latency
    walls: list[float] = []
    pushed: list[float] = []
    stages: list[dict[str, float]] = []
    polled: list[float] = []
    warm_answers()  # the fake's own cost (encoding its 16 answer images) stays out of the runs
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
        fake.script(MODEL, Ok(latency=latency, size=(0, 0)))
        with running_system(provider_env(fake)) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as c:
            # Warm-up: connections, bucket, first-call costs.
            c.post("/api/generate-preview-images", json={"videoId": "warm", "scenes": story(3)})
            wait_done(c, "warm")
            before = fake.count(MODEL)
            for r in range(repeats):
                posted = time.time()
                seconds, stage = one_video(fake, c, f"p{r}", n, 3, latency)
                pushed.append(seconds)
                stages.append(stage)
                final = wait_done(c, f"p{r}")
                walls.append(final["updatedAtMs"] / 1000 - posted)
                started = time.perf_counter()
                c.post("/api/generate-preview-images", json={"videoId": f"q{r}", "scenes": story(n)})
                wait_done(c, f"q{r}", every=0.01)
                polled.append(time.perf_counter() - started)
            paid = (fake.count(MODEL) - before) / (n * repeats * 2)
            in_flight = fake.max_in_flight[MODEL]
            # A run interrupted mid-way: the gateway killed once half the scenes are stored,
            # started again, the video posted again.
            before = fake.count(MODEL)
            c.post("/api/generate-preview-images", json={"videoId": "cut", "scenes": story(n)})
            deadline = time.monotonic() + 60
            while c.get("/api/video-status", params={"videoId": "cut"}).json()["progress"] < 50:
                assert time.monotonic() < deadline, "the interrupted run did not reach half way"
                time.sleep(0.02)
            gateway = system.procs.pop("gateway")
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(10)
            system.start("gateway")
            c.post("/api/generate-preview-images", json={"videoId": "cut", "scenes": story(n)})
            resumed = wait_done(c, "cut")
            assert resumed["status"] == "assets_generated" and len(resumed["images"]) == n
            repaid = (fake.count(MODEL) - before) / n
    ratio = median(pushed) / ideal
    stage = {name: median([t[name] for t in stages]) for name in stages[0]}
    return [
        Figure(
            "pipeline 30 scenes, where the time beyond the provider's goes (medians, ms), along the lane that "
            "ends last: POST to the first provider request; to that lane's first (the start's spread); between "
            "a provider answer and the next request on its lane (median gap of all lanes, and their sum on that "
            "lane); the provider beyond its latency; its last answer to the client's `end`",
            round(stage["beyond_ms"], 1),
            "ms",
            note=f"{describe(stage)}; all beyond {n // 3} x {latency * 1000:.0f} ms",
        ),
        Figure(
            "pipeline 30 scenes: median time until the client sees it done (event stream)",
            round(median(pushed), 3),
            "s",
            note=f"ideal {ideal:.2f} s; POST to the stream's end, client side",
        ),
        Figure(
            "pipeline 30 scenes: seen done by the client / ideal", round(ratio, 3), "ratio", "<= 1.03", ratio <= 1.03
        ),
        Figure(
            "pipeline 30 scenes: POST to final status recorded / ideal",
            round(median(walls) / ideal, 3),
            "ratio",
            note=f"{median(walls):.3f} s; the server's own timestamp",
        ),
        Figure(
            "pipeline 30 scenes: median time until a client polling every 10 ms sees it done / ideal",
            round(median(polled) / ideal, 3),
            "ratio",
            note=f"{median(polled):.3f} s; the poller's own delay included",
        ),
        Figure("pipeline: most requests at the provider at once", in_flight, "requests", "<= 3", in_flight <= 3),
        Figure("paid requests per scene, healthy runs", round(paid, 2), "per scene", "== 1.00", paid == 1.0),
        Figure(
            "paid requests per scene, a run killed half way and resumed",
            round(repaid, 2),
            "per scene",
            "== 1.00",
            repaid == 1.0,
            note="gateway SIGKILLed at 50% progress, restarted, the video posted again",
        ),
    ]


def load(quick: bool) -> list[Figure]:
    """20 videos x 10 scenes posted at once, provider latency 200 ms, 5% transient faults."""
    videos, per_video, latency, limit = (10, 5, 0.2, 4) if quick else (20, 10, 0.2, 4)
    total = videos * per_video
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
        fake.script(MODEL, Flaky(0.05, Ok(latency=latency, size=(0, 0)), seed=11))
        env = provider_env(fake, IMAGEGEN_CONCURRENCY=str(limit))
        with running_system(env) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as c:
            started = time.perf_counter()
            for v in range(videos):
                c.post("/api/generate-preview-images", json={"videoId": f"load{v}", "scenes": story(per_video)})
            finals = [wait_done(c, f"load{v}", timeout=600, every=0.02) for v in range(videos)]
            wall = time.perf_counter() - started
            rss = {name: peak_rss_mib(proc.pid) for name, proc in system.procs.items()}
        requests = fake.count(MODEL)
    stored = sum(len(f["images"]) for f in finals)
    real = sum(1 for f in finals for i in f["images"] if not i["placeholder"])
    ideal = math.ceil(total / limit) * latency
    figures = [
        Figure(f"load {videos}x{per_video}: scenes stored", stored, "scenes", f"== {total}", stored == total),
        Figure(f"load {videos}x{per_video}: real (non-placeholder) images", real, "scenes", note="5% faults retried"),
        Figure(
            f"load {videos}x{per_video}: wall / ideal (limit {limit} per provider)",
            round(wall / ideal, 3),
            "ratio",
            note=f"wall {wall:.2f} s, ideal {ideal:.2f} s, {requests} provider requests",
        ),
    ]
    figures += [Figure(f"load: peak RSS {name}", round(mib, 1), "MiB") for name, mib in sorted(rss.items())]
    return figures
