"""Storage: memory while three 5 MiB images go through at once, and upload throughput
through gRPC against writing the same bytes directly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from supabase import acreate_client

from bench.common import Figure, median, peak_rss_mib, rss_mib, running_system, wait_done
from gateway.clients import upload_chunks
from services.common.channels import open_channel
from services.common.memory import tune_allocator
from services.common.objects import write_atomically
from services.common.wire import upload_stream_method
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.images import noisy_png
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry
from tests.fakes.supabase_fake import FakeSupabase
from tools.processes import ROOT, SERVICES, System, free_port

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
                note=f"runs {runs} MiB; idle {median(idles[name]):.0f} MiB, peak {median(idles[name]) + above:.0f} MiB",
            )
        )
    return figures


async def _alternating(port: int, data: bytes, count: int, tmp: Path) -> dict[str, list[float]]:
    """Seconds per 5 MiB image, each way in turn: UploadStream as the gateway sends it, the
    unary Upload, and write_atomically of the same bytes in this process."""
    channel = open_channel(f"127.0.0.1:{port}")
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    upload_stream = upload_stream_method(channel)  # the gateway's call
    times: dict[str, list[float]] = {"stream": [], "unary": [], "direct": []}
    try:
        await stub.EnsureBucket(storage_pb2.EnsureBucketRequest(), timeout=10)
        for i in range(count + 2):  # the first two warm up
            request = storage_pb2.UploadRequest(path=f"bench/u-{i % 10}.png", data=data, content_type="image/png")
            started = time.perf_counter()
            await upload_stream(upload_chunks(request.path, data, "image/png"), timeout=30)
            stream = time.perf_counter() - started
            started = time.perf_counter()
            await stub.Upload(request, timeout=30)
            unary = time.perf_counter() - started
            started = time.perf_counter()
            write_atomically(tmp / f"d-{i % 10}.png", data)
            direct = time.perf_counter() - started
            if i >= 2:
                for how, seconds in (("stream", stream), ("unary", unary), ("direct", direct)):
                    times[how].append(seconds)
        return times
    finally:
        await channel.close()


def throughput(quick: bool) -> list[Figure]:
    tune_allocator()  # as the gateway, the real caller, does
    data = noisy_png(5 * MIB - 64 * 1024)
    with running_system() as system, tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(_alternating(system.port("storage"), data, 10 if quick else 40, Path(tmp)))
    stream, unary, direct = (len(data) / MIB / median(times[k]) for k in ("stream", "unary", "direct"))
    return [
        Figure(
            "5 MiB through UploadStream (checked and hashed as it arrives, atomic write)", round(stream, 1), "MiB/s"
        ),
        Figure("5 MiB through unary Upload (the same checks after the message)", round(unary, 1), "MiB/s"),
        Figure("5 MiB atomic writes directly (write, fsync, rename)", round(direct, 1), "MiB/s"),
        Figure(
            "upload throughput: UploadStream / direct",
            round(stream / direct, 3),
            "ratio",
            ">= 0.5",
            stream / direct >= 0.5,
            note="medians of per-image times, the three ways alternating",
        ),
        Figure("upload throughput: unary Upload / direct", round(unary / direct, 3), "ratio"),
    ]


# The real Supabase Storage server (its public source, file backend, on one machine) took a
# median 23 ms for a 2.6 MiB upload from the `supabase` client (issue #18's measurement).
REAL_SERVER_RATE = 2.6 * MIB / 0.023
SIZES_MIB = (1.0, 2.5, 5.0)


@contextmanager
def fake_supabase_process(upload_rate: float) -> Iterator[str]:
    """The Supabase fake in a process of its own, so neither client shares its GIL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.supabase_fake", "--upload-rate", str(upload_rate)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)


async def _against_direct(url: str, storage_port: int, count: int) -> dict[float, dict[str, list[float]]]:
    """Seconds per image at each size, alternating: UploadStream (as the gateway sends it,
    storage then uploading with the `supabase` client) and the `supabase` client uploading
    the same bytes straight to the same fake, with the same options."""
    direct = await acreate_client(url, FakeSupabase.key)
    channel = open_channel(f"127.0.0.1:{storage_port}")
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    upload_stream = upload_stream_method(channel)  # the gateway's call
    times: dict[float, dict[str, list[float]]] = {}
    try:
        await stub.EnsureBucket(storage_pb2.EnsureBucketRequest(), timeout=10)
        bucket = direct.storage.from_("renders-images")
        options: Any = {"content-type": "image/png", "upsert": "true", "cache-control": "3600"}
        for size in SIZES_MIB:
            data = noisy_png(int(size * MIB) - 32 * 1024)
            times[size] = {"upload": [], "direct": []}
            for i in range(count + 2):  # the first two warm up
                started = time.perf_counter()
                await upload_stream(upload_chunks(f"bench/s-{i % 5}.png", data, "image/png"), timeout=30)
                ours = time.perf_counter() - started
                started = time.perf_counter()
                await bucket.upload(f"bench/d-{i % 5}.png", data, options)
                theirs = time.perf_counter() - started
                if i >= 2:
                    times[size]["upload"].append(ours)
                    times[size]["direct"].append(theirs)
        return times
    finally:
        await channel.close()


def supabase(quick: bool) -> list[Figure]:
    tune_allocator()  # as the gateway does
    count = 8 if quick else 30
    figures: list[Figure] = []
    for label, rate in (("paced as the real server", REAL_SERVER_RATE), ("unpaced", 0.0)):
        with fake_supabase_process(rate) as url, tempfile.TemporaryDirectory() as tmp:
            overrides = {
                "DATA_DIR": tmp,
                "LOG_LEVEL": "WARNING",
                "STORAGE_BACKEND": "supabase",
                "SUPABASE_URL": url,
                "SUPABASE_SERVICE_ROLE_KEY": FakeSupabase.key,
            }
            system = System.configure(overrides, {name: free_port() for name in SERVICES})
            system.start("storage")
            try:
                times = asyncio.run(_against_direct(url, system.port("storage"), count))
            finally:
                system.stop_all()
        for size, runs in times.items():
            ours, theirs = median(runs["upload"]), median(runs["direct"])
            ratio = theirs / ours  # throughput ratio: the same bytes each way
            goal = label.startswith("paced")
            figures.append(
                Figure(
                    f"{size:g} MiB to the Supabase fake ({label}): Upload / direct client throughput",
                    round(ratio, 3),
                    "ratio",
                    ">= 0.8" if goal else "",
                    ratio >= 0.8 if goal else None,
                    note=f"median {ours * 1000:.1f} ms through storage, {theirs * 1000:.1f} ms direct",
                )
            )
    return figures
