"""imagegen as a real process against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench import bytes_server
from bench.common import Figure, median
from services.common.channels import open_channel
from services.common.memory import tune_allocator
from services.common.wire import generate_method
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.fakes.images import noisy_png
from tests.fakes.openai_fake import SERVER_ERROR, FakeOpenAI, Flaky, Hang, Ok, model_entry
from tools.processes import ROOT, SERVICES, System, free_port

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


def sequential_calls(port: int, count: int, between: Callable[[int], Awaitable[None]] | None = None) -> list[Call]:
    """``count`` Generate calls one after another (``between(i)`` runs before call i)."""

    async def run() -> list[Call]:
        channel = open_channel(f"127.0.0.1:{port}")
        stub = imagegen_pb2_grpc.ImageGenServiceStub(channel)
        calls = []
        try:
            for i in range(count):
                if between is not None:
                    await between(i)
                started = time.perf_counter()
                answer = await stub.Generate(imagegen_pb2.GenerateRequest(prompt=f"scene {i}"), timeout=65)
                calls.append(Call(time.perf_counter() - started, answer, started))
        finally:
            await channel.close()
        return calls

    return asyncio.run(run())


@dataclass
class Call:
    seconds: float
    answer: imagegen_pb2.GenerateResponse
    started: float


def hanging_primary(quick: bool) -> list[Figure]:
    """20 calls in a row; the primary hangs (its timeout T = 3 s), the secondary answers in
    200 ms. Only the first K calls may wait T; after that the breaker skips the primary."""
    timeout, latency, calls, k = 3.0, 0.2, 20, 3
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, Hang())
        fake.script(B, Ok(latency=latency, size=(0, 0)))
        system = start_imagegen(fake, tmp, IMAGEGEN_ATTEMPT_TIMEOUT=str(timeout), IMAGEGEN_BREAKER_THRESHOLD=str(k))
        try:
            results = sequential_calls(system.port("imagegen"), calls)
        finally:
            system.stop_all()
    assert all(c.answer.provider == B for c in results)
    waited = sum(1 for c in results if c.seconds >= timeout)
    first = median([c.seconds for c in results[:waited]]) if waited else 0.0
    later = median([c.seconds for c in results[waited:]])
    return [
        Figure(
            "primary hangs (T 3 s), 20 calls in a row: calls that waited T",
            waited,
            "calls",
            f"<= K ({k})",
            waited <= k,
            note=f"primary asked {fake.count(A)} times",
        ),
        Figure(
            "primary hangs: those calls' time / (T + secondary latency)",
            round(first / (timeout + latency), 3),
            "ratio",
            "<= 1.10",
            first / (timeout + latency) <= 1.10,
        ),
        Figure("primary hangs: median of the later calls", round(later * 1000, 1), "ms", "<= 250", later <= 0.25),
    ]


def failing_primary(quick: bool) -> list[Figure]:
    """20 calls in a row; the primary answers 500, the secondary 200 ms."""
    latency, calls, k = 0.2, 20, 3
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, SERVER_ERROR)
        fake.script(B, Ok(latency=latency, size=(0, 0)))
        system = start_imagegen(fake, tmp, IMAGEGEN_BREAKER_THRESHOLD=str(k))
        try:
            results = sequential_calls(system.port("imagegen"), calls)
        finally:
            system.stop_all()
        asked = fake.count(A)
    assert all(c.answer.provider == B for c in results)
    typical = median([c.seconds for c in results])
    return [
        Figure(
            "primary answers 500, 20 calls: requests to it", asked, "requests", f"<= K + 1 ({k + 1})", asked <= k + 1
        ),
        Figure("primary answers 500: median call", round(typical * 1000, 1), "ms", "<= 250", typical <= 0.25),
    ]


def recovering_primary(quick: bool) -> list[Figure]:
    """40 calls in a row; the primary fails (500) for the first 20, then recovers. It serves
    again within one cooldown plus one probe: by the time the breaker lets its probe through
    (ListProviders' retry_in at the moment of recovery) plus the call in flight and the probe."""
    latency, calls, cooldown = 0.2, 40, 2.0
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, SERVER_ERROR)
        fake.script(B, Ok(latency=latency, size=(0, 0)))
        system = start_imagegen(fake, tmp, IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN=str(cooldown))
        port = system.port("imagegen")
        recovered: dict[str, float] = {}

        async def recover(i: int) -> None:
            if i == calls // 2:
                fake.script(A, Ok(latency=latency, size=(0, 0)))
                recovered["at"] = time.perf_counter()
                recovered["retry_in"] = await retry_in(port, A)

        try:
            results = sequential_calls(port, calls, recover)
        finally:
            system.stop_all()
    back = next(c for c in results if c.started >= recovered["at"] and c.answer.provider == A)
    delay = back.started + back.seconds - recovered["at"]
    bound = recovered["retry_in"] + 2 * (latency + 0.05)
    served = sum(1 for c in results[calls // 2 :] if c.answer.provider == A)
    return [
        Figure(
            "primary recovers after 20 failing calls: time until it serves again",
            round(delay, 3),
            "s",
            f"<= cooldown left + 2 calls ({bound:.2f} s)",
            delay <= bound,
            note=f"served {served} of the last {calls - calls // 2} calls",
        )
    ]


async def retry_in(port: int, provider: str) -> float:
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        answer = await imagegen_pb2_grpc.ImageGenServiceStub(channel).ListProviders(
            imagegen_pb2.ListProvidersRequest(), timeout=5
        )
    finally:
        await channel.close()
    return float(next(p.retry_in_ms for p in answer.providers if p.name == provider)) / 1000


def heavy_tail(quick: bool) -> list[Figure]:
    """Real latencies scaled down 100x: both models lognormal (median 100 ms, p99 1.5 s),
    budget 0.6 s (60 s), attempt timeout 0.3 s (30 s at quality low), breaker cooldown 0.3 s
    (30 s), 4 calls at a time.
    Placeholders, and wall time against the ideal: the primary's own latencies for every
    scene, four at a time, as if nothing were ever cut."""
    scenes, lanes = (50 if quick else 100), 4
    sigma = math.log(15) / 2.326  # p99 / median = 15
    draws = random.Random(7)
    a_latencies = [draws.lognormvariate(math.log(0.1), sigma) for _ in range(scenes * 2)]
    b_latencies = [draws.lognormvariate(math.log(0.1), sigma) for _ in range(scenes * 2)]
    with FakeOpenAI(models=[model_entry(A), model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(A, *(Ok(latency=x, size=(0, 0)) for x in a_latencies))
        fake.script(B, *(Ok(latency=x, size=(0, 0)) for x in b_latencies))
        system = start_imagegen(
            fake,
            tmp,
            IMAGE_GEN_TIMEOUT="0.6",
            IMAGEGEN_ATTEMPT_TIMEOUT="0.3",
            IMAGEGEN_PLACEHOLDER_RESERVE="0.005",
            IMAGEGEN_MIN_ATTEMPT="0.01",
            IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN="0.3",
        )
        try:
            started = time.perf_counter()
            results = asyncio.run(generate_many(system.port("imagegen"), scenes, lanes))
            wall = time.perf_counter() - started
        finally:
            system.stop_all()
    ideal = makespan(a_latencies[:scenes], lanes)
    placeholders = sum(1 for _t, a in results if a.placeholder)
    served_by = {p: sum(1 for _t, a in results if a.provider == p) for p in (A, B)}
    return [
        Figure(
            f"heavy-tailed latency, {scenes} scenes: placeholders",
            placeholders,
            "scenes",
            "<= 5%",
            placeholders <= 0.05 * scenes,
            note=f"primary {served_by[A]}, secondary {served_by[B]}",
        ),
        Figure(
            "heavy-tailed latency: wall / ideal (primary's own latencies, 4 at a time, uncut)",
            round(wall / ideal, 3),
            "ratio",
            note=f"{wall:.2f} s vs {ideal:.2f} s",
        ),
    ]


def makespan(latencies: list[float], lanes: int) -> float:
    """When the last of these jobs ends, run in order on ``lanes`` lanes."""
    ends = [0.0] * lanes
    for latency in latencies:
        ends.sort()
        ends[0] += latency
    return max(ends)


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


# A child process that answers each one-byte request on a TCP connection with the image's
# bytes (an 8-byte length, then the bytes): the same transfer with nothing but the socket.
LOOPBACK_SENDER = """
import socket, struct, sys
data = sys.stdin.buffer.read()
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
while conn.recv(1):
    conn.sendall(struct.pack(">Q", len(data)) + data)
"""


def _fetch_raw(sock: socket.socket) -> int:
    sock.sendall(b"?")
    size = struct.unpack(">Q", sock.recv(8, socket.MSG_WAITALL))[0]
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        got += sock.recv_into(view[got:])
    return got


def image_answer(quick: bool) -> list[Figure]:
    """A 4.9 MiB image answered by imagegen (from its replay cache: no provider call) to a
    caller making the gateway's own call, against the same bytes from another process over a
    plain loopback socket, and from a bare gRPC server (bench/bytes_server.py: no protobuf,
    no handler work); alternating, medians."""
    tune_allocator()  # as the gateway does
    image = noisy_png(int(4.9 * 1024 * 1024))
    count = 10 if quick else 40
    times: dict[str, list[float]] = {"generate": [], "raw": [], "bare": []}
    with FakeOpenAI(models=[model_entry(B)]) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.script(B, Ok(payload=image))
        system = start_imagegen(fake, tmp, IMAGEGEN_CHAIN=B)
        sender = subprocess.Popen(
            [sys.executable, "-c", LOOPBACK_SENDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.bytes_server"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            ports = []
            for child in (sender, bare):
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(image)
                child.stdin.close()
                ports.append(int(child.stdout.readline()))
            sock = socket.create_connection(("127.0.0.1", ports[0]))

            async def run() -> None:
                channel = open_channel(f"127.0.0.1:{system.port('imagegen')}")
                bare_channel = open_channel(f"127.0.0.1:{ports[1]}")
                generate = generate_method(channel)  # the gateway's call
                get = bare_channel.unary_unary(bytes_server.METHOD, bytes_server.identity, bytes_server.identity)
                request = imagegen_pb2.GenerateRequest(prompt="one scene", video_id="bench", scene=1)
                try:
                    for i in range(count + 2):  # the first pays; then every answer is replayed
                        started = time.perf_counter()
                        answer = await generate(request, timeout=65)
                        seconds = time.perf_counter() - started
                        assert len(answer.image) == len(image)
                        started = time.perf_counter()
                        assert _fetch_raw(sock) == len(image)
                        raw = time.perf_counter() - started
                        started = time.perf_counter()
                        assert len(await get(b"?", timeout=10)) == len(image)
                        plain_grpc = time.perf_counter() - started
                        if i >= 2:
                            times["generate"].append(seconds)
                            times["raw"].append(raw)
                            times["bare"].append(plain_grpc)
                finally:
                    await channel.close()
                    await bare_channel.close()

            asyncio.run(run())
            sock.close()
            paid = fake.count(B)
        finally:
            sender.kill()
            bare.kill()
            system.stop_all()
    ours, plain, floor = (median(times[k]) for k in ("generate", "raw", "bare"))
    mib = len(image) / 1024 / 1024
    return [
        Figure("imagegen -> caller: a 4.9 MiB image in a Generate answer", round(mib / ours, 1), "MiB/s"),
        Figure("the same bytes over a plain loopback socket", round(mib / plain, 1), "MiB/s"),
        Figure("the same bytes from a bare gRPC server (no protobuf, no handler work)", round(mib / floor, 1), "MiB/s"),
        Figure(
            "image answer: Generate / plain socket throughput",
            round(plain / ours, 3),
            "ratio",
            note=f"median {ours * 1000:.1f} ms vs {plain * 1000:.1f} ms; provider requests {paid} (replayed answers)",
        ),
        Figure(
            "image answer: Generate / bare gRPC throughput",
            round(floor / ours, 3),
            "ratio",
            note=f"median {ours * 1000:.1f} ms vs {floor * 1000:.1f} ms: what gRPC itself costs is in both",
        ),
    ]
