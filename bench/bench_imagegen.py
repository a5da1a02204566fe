"""imagegen as a real process against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import tempfile
import time

from bench.common import Figure, median
from services.common.channels import open_channel
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.fakes.openai_fake import FakeOpenAI, Flaky, Hang, Ok, model_entry
from tools.processes import SERVICES, System, free_port

A, B = "gpt-image-2.5-sunburst", "gpt-image-2"


def start_imagegen(fake: FakeOpenAI, tmp: str, **env: str) -> System:
    system = System.configure(
        {
            "OPENAI_API_KEY": "sk-bench-0000000000",
            "OPENAI_BASE_URL": fake.base_url,
            "IMAGEGEN_CHAIN": f"{A},{B}",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": tmp,
            **env,
        },
        {name: free_port() for name in SERVICES},
    )
    system.start("imagegen")
    return system


async def generate_many(port: int, count: int, concurrency: int) -> list[tuple[float, imagegen_pb2.GenerateResponse]]:
    channel = open_channel(f"127.0.0.1:{port}")
    stub = imagegen_pb2_grpc.ImageGenServiceStub(channel)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> tuple[float, imagegen_pb2.GenerateResponse]:
        async with gate:
            started = time.perf_counter()
            answer = await stub.Generate(
                imagegen_pb2.GenerateRequest(prompt=f"scene {i}", size="1024x1024"), timeout=65
            )
            return time.perf_counter() - started, answer

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await channel.close()


def hanging_first_model(quick: bool) -> list[Figure]:
    """First model hangs, second answers after L: time to the image against attempt timeout + L."""
    timeout, latency, repeats = 1.0, 0.2, (3 if quick else 7)
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, Hang())
        fake.script(B, Ok(latency=latency, size=(0, 0)))
        system = start_imagegen(fake, tmp, IMAGEGEN_ATTEMPT_TIMEOUT=str(timeout))
        try:
            results = asyncio.run(generate_many(system.port("imagegen"), repeats, 1))
        finally:
            system.stop_all()
    times = [t for t, _a in results]
    assert all(a.provider == B for _t, a in results)
    bound = timeout + latency
    ratio = median(times) / bound
    return [
        Figure(
            "first model hangs: median time to second model's image",
            round(median(times), 3),
            "s",
            note=f"bound {bound:.2f} s (attempt timeout {timeout} s + L {latency} s)",
        ),
        Figure("first model hangs: time / (timeout + L)", round(ratio, 3), "ratio", "<= 1.10", ratio <= 1.10),
    ]


def transient_faults(quick: bool) -> list[Figure]:
    """Provider requests per scene over 100 scenes with 10% transient faults on the first model."""
    scenes = 40 if quick else 100
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, Flaky(0.10, Ok(latency=0.02, size=(0, 0)), seed=5))
        fake.script(B, Ok(latency=0.02, size=(0, 0)))
        system = start_imagegen(fake, tmp)
        try:
            results = asyncio.run(generate_many(system.port("imagegen"), scenes, 4))
        finally:
            system.stop_all()
        requests = fake.count()
    per_scene = requests / scenes
    placeholders = sum(1 for _t, a in results if a.placeholder)
    return [
        Figure(
            "10% transient faults: provider requests per scene",
            round(per_scene, 3),
            "per scene",
            "<= 1.25",
            per_scene <= 1.25,
            note=f"{requests} requests for {scenes} scenes",
        ),
        Figure("10% transient faults: placeholders", placeholders, "scenes", "== 0", placeholders == 0),
    ]
