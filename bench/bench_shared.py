"""imagegen replicas sharing one provider limit through Redis (IMAGEGEN_SHARED_STATE)."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid

import redis

from bench.common import Figure, median
from services.common.channels import open_channel
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry
from tools.processes import SERVICES, System, free_port, wait_for_port

MODEL = "gpt-image-2"
REDIS_URL = "redis://127.0.0.1:6379/0"
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


def shared_limit(quick: bool) -> list[Figure]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    client.ping()  # the machine's Redis (every machine here has one)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rounds = 2 if quick else 5
    ratios, peaks, paid = [], [], []
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(MODEL, Ok(latency=LATENCY))
        settings = {
            "OPENAI_API_KEY": "sk-bench-0000000000",
            "OPENAI_BASE_URL": fake.base_url,
            "IMAGEGEN_CHAIN": MODEL,
            "IMAGEGEN_CONCURRENCY": str(LIMIT),
            "IMAGEGEN_SHARED_STATE": REDIS_URL,
            "IMAGEGEN_SHARED_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": tmp,
        }
        system = System.configure(settings, {name: free_port() for name in SERVICES})
        ports = []
        try:
            for i in range(REPLICAS):
                port = free_port()
                ports.append(port)
                env = {**system.env, "IMAGEGEN_PORT": str(port), "IMAGEGEN_METRICS_PORT": str(free_port())}
                system.start(f"imagegen-{i}", module="services.imagegen", env=env, port=port, wait=False)
            for i, port in enumerate(ports):
                wait_for_port(port, 30, system.procs[f"imagegen-{i}"])
            asyncio.run(_run(ports))  # warm: connections, the scripts loaded into Redis
            for _ in range(rounds):
                fake.max_in_flight.clear()
                before = fake.count(MODEL)
                seconds = asyncio.run(_run(ports))
                ideal = VIDEOS * SCENES / (LIMIT / LATENCY)
                ratios.append(ideal / seconds)
                peaks.append(fake.max_in_flight.get(MODEL, 0))
                paid.append((fake.count(MODEL) - before) / (VIDEOS * SCENES))
        finally:
            system.stop_all()
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)
    ratio = median(ratios)
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
            "most requests at the provider at once, any run", max(peaks), "requests", f"<= {LIMIT}", max(peaks) <= LIMIT
        ),
        Figure("paid requests per scene, worst run", round(max(paid), 2), "per scene", "== 1.00", max(paid) == 1.0),
    ]
