"""imagegen replicas sharing one provider limit through Redis (IMAGEGEN_SHARED_STATE): the
scenes/s against the ideal, and the most requests at the provider at once, in plain runs,
in a run with every core busy (late Redis answers on a busy loop must not be taken for a
dead Redis), and in a run during which Redis stops answering (SIGSTOP) and comes back (each
replica's part of the limit while it is down, the return to sharing)."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Figure, cores_busy, median
from services.common.channels import open_channel
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry
from tests.redis_server import OwnRedis
from tools.processes import SERVICES, System, free_port, wait_for_port

MODEL = "gpt-image-2"
REPLICAS, LIMIT, LATENCY = 3, 6, 0.2
VIDEOS, SCENES = 12, 10


async def _run(ports: list[int]) -> float:
    """Every scene of every video posted at once, each video's scenes spread over the
    replicas as the gateway's round_robin does, SCENE_CONCURRENCY (3) of a video at a time
    at the provider per replica."""
    channels = [open_channel(f"127.0.0.1:{port}") for port in ports]
    stubs = [imagegen_pb2_grpc.ImageGenServiceStub(c) for c in channels]
    run = uuid.uuid4().hex[:8]
    try:
        started = time.perf_counter()
        calls = []
        for v in range(VIDEOS):
            for s in range(1, SCENES + 1):
                stub = stubs[(v * SCENES + s) % len(stubs)]
                request = imagegen_pb2.GenerateRequest(
                    prompt=f"{run} video {v} scene {s}", video_id=f"{run}-{v}", scene=s, video_parallelism=3
                )
                calls.append(stub.Generate(request, timeout=60))
        answers = await asyncio.gather(*calls)
        seconds = time.perf_counter() - started
        assert all(a.provider == MODEL for a in answers), "a scene fell back"
        return seconds
    finally:
        for channel in channels:
            await channel.close()


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.1)


def _all_down(metrics: list[int]) -> bool:
    return all(_metric(port, "storyshort_imagegen_shared_state_up") == 0 for port in metrics)


async def _run_through_a_freeze(ports: list[int], metrics: list[int], server: OwnRedis, fake: FakeOpenAI) -> float:
    """A run during which Redis stops answering once the provider is busy, until every
    replica has found it dead; then it answers again before the run ends."""
    run = asyncio.ensure_future(_run(ports))
    await asyncio.to_thread(fake.wait_for_requests, fake.count(MODEL) + LIMIT, 30)
    server.freeze()
    try:
        await asyncio.to_thread(_until, lambda: run.done() or _all_down(metrics), 30)
    finally:
        server.thaw()
    return await run


def shared_limit(quick: bool) -> list[Figure]:
    rounds = 2 if quick else 5
    ratios, peaks, paid = [], [], []
    server = OwnRedis()  # a server of its own: the bench freezes it
    server.start()
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(MODEL, Ok(latency=LATENCY))
        settings = {
            "OPENAI_API_KEY": "sk-bench-0000000000",
            "OPENAI_BASE_URL": fake.base_url,
            "IMAGEGEN_CHAIN": MODEL,
            "IMAGEGEN_CONCURRENCY": str(LIMIT),
            "IMAGEGEN_SHARED_STATE": server.url,
            "IMAGEGEN_SHARED_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": tmp,
        }
        system = System.configure(settings, {name: free_port() for name in SERVICES})
        ports, metrics = [], []
        try:
            for i in range(REPLICAS):
                port, metrics_port = free_port(), free_port()
                ports.append(port)
                metrics.append(metrics_port)
                env = {**system.env, "IMAGEGEN_PORT": str(port), "IMAGEGEN_METRICS_PORT": str(metrics_port)}
                system.start(f"imagegen-{i}", module="services.imagegen", env=env, port=port, wait=False)
            for i, port in enumerate(ports):
                wait_for_port(port, 30, system.procs[f"imagegen-{i}"])
            asyncio.run(_run(ports))  # warm: connections, the scripts loaded into Redis

            def measured(run: str, work: Coroutine[Any, Any, float]) -> float:
                fake.max_in_flight.clear()
                before = fake.count(MODEL)
                seconds = asyncio.run(work)
                peaks.append((run, fake.max_in_flight.get(MODEL, 0)))
                paid.append((fake.count(MODEL) - before) / (VIDEOS * SCENES))
                return seconds

            for _ in range(rounds):
                seconds = measured("plain", _run(ports))
                ratios.append(VIDEOS * SCENES / (LIMIT / LATENCY) / seconds)
            with cores_busy():
                measured("cores busy", _run(ports))
            measured("Redis frozen mid-run", _run_through_a_freeze(ports, metrics, server, fake))
            late = sum(_metric(m, "storyshort_imagegen_shared_state_late_total") for m in metrics)
        finally:
            system.stop_all()
            server.kill()
    ratio = median(ratios)
    peak = max(p for _, p in peaks)
    return [
        Figure(
            f"{REPLICAS} replicas, shared limit {LIMIT}, latency {LATENCY * 1000:.0f} ms, "
            f"{VIDEOS * SCENES} scenes of {VIDEOS} videos: scenes/s / ideal {LIMIT / LATENCY:.0f}/s",
            round(ratio, 3),
            "ratio",
            ">= 0.9",
            ratio >= 0.9,
            note="runs " + ", ".join(f"{r:.3f}" for r in ratios),
        ),
        Figure(
            "most requests at the provider at once, any run (plain, cores busy, Redis frozen mid-run)",
            peak,
            "requests",
            f"<= {LIMIT}",
            peak <= LIMIT,
            note=", ".join(f"{run} {p}" for run, p in peaks) + f"; Redis answers late, all runs: {late:g}",
        ),
        Figure("paid requests per scene, worst run", round(max(paid), 2), "per scene", "== 1.00", max(paid) == 1.0),
    ]
