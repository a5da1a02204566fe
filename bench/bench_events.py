"""The event stream under load: 500 subscribers on one gateway while videos run. Delivery
latency from the status write (the answer's updatedAtMs, set by the status service when it
wrote; same machine, same clock) to the moment a subscriber has the event, and the
gateway's memory per open stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx

from bench.bench_pipeline import MODEL, provider_env, story
from bench.common import Figure, median, percentile, rss_mib, running_system, wait_done
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry


async def _subscriber(port: int, video_id: str, opened: asyncio.Event, delays: list[float], previews: list[int]) -> int:
    """(``previews``: this stream's preview events are counted in its own slot, appended.)"""
    """One stream over a plain socket (HTTP/1.0: no chunking), so the client's own cost stays
    small next to the gateway's. Answers how many status events it received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/videos/{video_id}/events HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    assert b" 200 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    received, first, event, seen_previews = 0, True, "", 0
    opened.set()
    try:
        while line := await reader.readline():
            text = line.decode().rstrip("\r\n")
            if text.startswith("event:"):
                event = text.removeprefix("event:").strip()
                if event == "end":
                    break
            elif text.startswith("data:") and event == "preview":
                seen_previews += 1
            elif text.startswith("data:") and event == "status":
                at = time.time()
                answer = json.loads(text.removeprefix("data:"))
                received += 1
                if first:  # the snapshot sent on connecting, not a pushed change
                    first = False
                    continue
                if answer.get("updatedAtMs"):
                    delays.append(at - answer["updatedAtMs"] / 1000)
    finally:
        writer.close()
        previews.append(seen_previews)
    return received


async def _run(
    port: int, videos: list[str], per_video: int, measure_rss: Callable[[], float], previews: list[int]
) -> tuple[list[float], list[int], float]:
    delays: list[float] = []
    opened = [asyncio.Event() for _ in range(len(videos) * per_video)]
    tasks = [
        asyncio.create_task(_subscriber(port, video, opened[i * per_video + j], delays, previews))
        for i, video in enumerate(videos)
        for j in range(per_video)
    ]
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 60)
    rss = measure_rss()
    counts = await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return delays, counts, float(rss)


def events(quick: bool) -> list[Figure]:
    """5 videos x 10 scenes, provider latency 200 ms, one video running at a time (the
    others wait in line, their streams open); 100 subscribers per video."""
    videos, scenes, subscribers = 5, 10, 500
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
        # Each scene streams one partial image first: a preview event and its status event too.
        fake.script(MODEL, Ok(latency=0.2, size=(256, 256), partial_at=(0.1,)))
        env = provider_env(
            fake, MAX_RUNNING_VIDEOS="1", EVENTS_POLL_EVERY="1", IMAGE_SIZE="256x256", IMAGEGEN_PARTIAL_IMAGES="1"
        )
        with running_system(env) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as client:
            client.post("/api/generate-preview-images", json={"videoId": "warm", "scenes": story(2)})
            wait_done(client, "warm")
            gateway = system.procs["gateway"].pid
            before = rss_mib(gateway)
            ids = [f"ev{v}" for v in range(videos)]
            for video in ids:
                answer = client.post("/api/generate-preview-images", json={"videoId": video, "scenes": story(scenes)})
                assert answer.status_code == 202, answer.text
            port = system.port("gateway")
            previews: list[int] = []  # preview events per stream
            delays, counts, with_streams = asyncio.run(
                _run(port, ids, subscribers // videos, lambda: rss_mib(gateway), previews)
            )
            finals = [wait_done(client, video) for video in ids]
    assert all(f["status"] == "assets_generated" for f in finals)
    per_stream_kib = max(0.0, (with_streams - before) * 1024 / subscribers)
    p50, p99 = median(delays) * 1000, percentile(delays, 99) * 1000
    return [
        Figure("events: subscribers on one gateway", subscribers, "streams"),
        Figure(
            "events: status events delivered",
            len(delays),
            "events",
            note=f"median {median([float(c) for c in counts]):g} per stream",
        ),
        Figure(
            "events: preview events per stream, median (each scene streams one partial)",
            median([float(p) for p in previews]),
            "events",
            f">= {scenes // 2} of its video's {scenes} scenes",
            median([float(p) for p in previews]) >= scenes // 2,
            note=f"{sum(previews)} in all",
        ),
        Figure("events: delivery latency from the status write, p50", round(p50, 1), "ms", "<= 100 ms", p50 <= 100),
        Figure("events: delivery latency from the status write, p99", round(p99, 1), "ms", "<= 1000 ms", p99 <= 1000),
        Figure(
            "events: gateway memory per open stream",
            round(per_stream_kib, 1),
            "KiB",
            "<= 64 KiB",
            per_stream_kib <= 64,
            note="RSS with 500 streams open minus before, / 500",
        ),
    ]
