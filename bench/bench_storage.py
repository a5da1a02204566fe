"""Storage: memory while three 5 MiB images go through at once, and upload throughput
through gRPC against writing the same bytes directly."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Figure, median, peak_rss_mib, rss_mib, running_system, wait_done
from services.common.channels import open_channel
from services.common.objects import write_atomically
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.images import noisy_png
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry

MODEL = "gpt-image-2"
MIB = 1024 * 1024


def reset_peak(pid: int) -> None:
    """Reset the kernel's high-water mark of a process's resident set (VmHWM) to its current
    size (Linux: writing 5 to /proc/<pid>/clear_refs), so the next peak is this case's own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory(quick: bool) -> list[Figure]:
    image = noisy_png(int(4.9 * MIB))
    with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
        fake.script(MODEL, Ok(payload=image))
        env = {"OPENAI_API_KEY": "sk-bench-0000000000", "OPENAI_BASE_URL": fake.base_url, "IMAGEGEN_CHAIN": MODEL}
        with running_system(env) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as c:
            c.post("/api/generate-preview-images", json={"videoId": "warm", "scenes": [{"prompt": "w"}]})
            wait_done(c, "warm")
            pids = {name: system.procs[name].pid for name in ("gateway", "storage")}
            rises: dict[str, list[float]] = {name: [] for name in pids}
            idles: dict[str, list[float]] = {name: [] for name in pids}
            for r in range(2 if quick else 3):
                idle = {name: rss_mib(pid) for name, pid in pids.items()}
                for pid in pids.values():
                    reset_peak(pid)
                c.post(
                    "/api/generate-preview-images",
                    json={"videoId": f"big{r}", "scenes": [{"prompt": f"b{r}-{s}"} for s in range(3)]},
                )
                final = wait_done(c, f"big{r}")
                assert len(final["images"]) == 3
                for name, pid in pids.items():
                    rises[name].append(peak_rss_mib(pid) - idle[name])
                    idles[name].append(idle[name])
    figures = []
    for name in pids:
        above = median(rises[name])
        runs = ", ".join(f"{x:.0f}" for x in rises[name])
        figures.append(
            Figure(
                f"3 x 5 MiB at once: {name} peak RSS above idle, median",
                round(above, 1),
                "MiB",
                "<= 64",
                above <= 64,
                note=f"runs {runs} MiB; idle {median(idles[name]):.0f} MiB",
            )
        )
    return figures


async def _grpc_uploads(port: int, data: bytes, count: int) -> float:
    channel = open_channel(f"127.0.0.1:{port}")
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    try:
        await stub.EnsureBucket(storage_pb2.EnsureBucketRequest(), timeout=10)
        started = time.perf_counter()
        for i in range(count):
            await stub.Upload(
                storage_pb2.UploadRequest(path=f"bench/u-{i}.png", data=data, content_type="image/png"), timeout=30
            )
        return time.perf_counter() - started
    finally:
        await channel.close()


def throughput(quick: bool) -> list[Figure]:
    data = noisy_png(5 * MIB - 64 * 1024)
    count, rounds = (5, 2) if quick else (10, 3)
    grpc_rates, direct_rates = [], []
    with running_system() as system, tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            seconds = asyncio.run(_grpc_uploads(system.port("storage"), data, count))
            grpc_rates.append(count * len(data) / MIB / seconds)
            started = time.perf_counter()
            for i in range(count):
                write_atomically(Path(tmp) / f"d-{i}.png", data)
            direct_rates.append(count * len(data) / MIB / (time.perf_counter() - started))
    ratio = median(grpc_rates) / median(direct_rates)
    return [
        Figure(
            "5 MiB uploads through gRPC (validate, check image, atomic write)", round(median(grpc_rates), 1), "MiB/s"
        ),
        Figure("5 MiB atomic writes directly", round(median(direct_rates), 1), "MiB/s"),
        Figure(
            "upload throughput: gRPC / direct",
            round(ratio, 3),
            "ratio",
            note="the gap is the image check and the copies into and out of protobuf messages over loopback",
        ),
    ]
