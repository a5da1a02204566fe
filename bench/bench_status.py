"""GET /api/video-status: latency healthy and with the store dead (breaker open), and reads
per second through gateway -> status -> SQLite against a route reading the row directly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx

from bench.common import Figure, median, peak_rss_mib, percentile, running_system, wait_done
from tools.processes import ROOT, free_port, wait_for_port


def latencies(url: str, video_id: str, count: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = client.get("/api/video-status", params={"videoId": video_id})
            out.append(time.perf_counter() - started)
            assert answer.status_code == 200
    return out


# Reads whose connection dropped, across the run (printed with the figures).
DROPPED: list[str] = []


async def _throughput(
    url: str, video_id: str, seconds: float, workers: int, headers: dict[str, str] | None = None
) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=headers) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                try:
                    answer = await client.get("/api/video-status", params={"videoId": video_id})
                except httpx.TransportError as exc:
                    # A dropped connection is a read that did not count, not the end of the
                    # benchmark (one full run lost the figure to a single ReadError).
                    DROPPED.append(f"{url}: {type(exc).__name__}")
                    continue
                if answer.status_code == 200:
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)


def throughput(
    url: str, video_id: str, seconds: float, workers: int = 16, headers: dict[str, str] | None = None
) -> float:
    return asyncio.run(_throughput(url, video_id, seconds, workers, headers))


def status_reads(quick: bool) -> list[Figure]:
    count, seconds, rounds = (200, 3.0, 2) if quick else (1000, 6.0, 3)
    figures: list[Figure] = []
    with running_system() as system, httpx.Client(base_url=system.gateway_url, timeout=30) as client:
        client.post("/api/generate-preview-images", json={"videoId": "read", "scenes": [{"prompt": "a"}] * 10})
        wait_done(client, "read")
        healthy = latencies(system.gateway_url, "read", count)
        figures += [
            Figure("status GET, store healthy: p50", round(median(healthy) * 1000, 2), "ms"),
            Figure("status GET, store healthy: p99", round(percentile(healthy, 99) * 1000, 2), "ms"),
        ]
        port = free_port()
        env = {**system.env, "STATUS_SQLITE_PATH": f"{system.env['DATA_DIR']}/status.sqlite3"}
        direct = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.direct_status_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_for_port(port, 30, direct)
            direct_url = f"http://127.0.0.1:{port}"
            ours, theirs = [], []
            for _ in range(rounds):  # alternate, so drift hits both alike
                ours.append(throughput(system.gateway_url, "read", seconds))
                theirs.append(throughput(direct_url, "read", seconds))
        finally:
            direct.terminate()
            direct.wait(10)
    ratio = median(ours) / median(theirs)
    if DROPPED:
        figures.append(Figure("status reads dropped by a connection error (not counted)", len(DROPPED), "reads"))
    figures += [
        Figure("status reads/s: gateway -> status -> SQLite", round(median(ours)), "req/s"),
        Figure("status reads/s: one process, same store, same JSON", round(median(theirs)), "req/s"),
        Figure("status reads/s: gateway path / direct", round(ratio, 3), "ratio", ">= 0.70", ratio >= 0.70),
    ]
    dead_env = {
        "STATUS_STORE": "postgres",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        "STATUS_ATTEMPT_TIMEOUT": "1",
    }
    with running_system(dead_env) as system:
        first = latencies(system.gateway_url, "any", 1)
        latencies(system.gateway_url, "any", 4)  # the breaker opens after repeated failures
        dead = latencies(system.gateway_url, "any", count)
    p99 = percentile(dead, 99) * 1000
    figures += [
        Figure(
            "status GET, store dead: first answer (before the breaker)",
            round(first[0] * 1000, 1),
            "ms",
            note="3 attempts of up to 1 s; the single-process version took ~16 s",
        ),
        Figure("status GET, store dead, breaker open: p50", round(median(dead) * 1000, 2), "ms"),
        Figure("status GET, store dead, breaker open: p99", round(p99, 2), "ms", "<= 50", p99 <= 50),
    ]
    return figures


def status_frozen(quick: bool) -> list[Figure]:
    """The status service stopped (SIGSTOP): the first poll waits out STATUS_TIMEOUT, then
    the gateway's breaker answers the last known state at once: p99 of the next 100 polls."""
    with running_system({"STATUS_TIMEOUT": "2"}) as system, httpx.Client(base_url=system.gateway_url) as client:
        client.post("/api/generate-preview-images", json={"videoId": "frozen", "scenes": [{"prompt": "a"}] * 3})
        wait_done(client, "frozen")
        frozen = system.procs["status"]
        frozen.send_signal(signal.SIGSTOP)
        try:
            first = latencies(system.gateway_url, "frozen", 1)[0]
            after = latencies(system.gateway_url, "frozen", 100)
        finally:
            frozen.send_signal(signal.SIGCONT)
    p99 = percentile(after, 99) * 1000
    return [
        Figure("status frozen: first poll (waits out STATUS_TIMEOUT 2 s)", round(first * 1000, 1), "ms"),
        Figure("status frozen: p99 of the next 100 polls", round(p99, 2), "ms", "<= 50", p99 <= 50),
    ]


def flood(quick: bool) -> list[Figure]:
    """Videos x scenes posted at once on the default settings (placeholder chain, runs in
    the gateway): status GET latency from a poller during the flood, the gateway's peak
    memory (VmHWM), and every video finishing."""
    videos, per_video = (60, 20) if quick else (300, 50)
    with running_system() as system, httpx.Client(base_url=system.gateway_url, timeout=60) as client:
        gateway_pid = system.procs["gateway"].pid
        client.post("/api/generate-preview-images", json={"videoId": "poll", "scenes": [{"prompt": "a"}]})
        wait_done(client, "poll")
        body = [{"prompt": f"scene {i}: a lighthouse in a storm"} for i in range(per_video)]
        started = time.perf_counter()
        codes = [
            client.post("/api/generate-preview-images", json={"videoId": f"flood-{v}", "scenes": body}).status_code
            for v in range(videos)
        ]
        reads: list[float] = []
        pending = {f"flood-{v}" for v in range(videos)}
        while pending and time.perf_counter() - started < 1800:
            reads += latencies(system.gateway_url, "poll", 20)
            for video in list(pending)[:20]:
                answer = client.get("/api/video-status", params={"videoId": video}).json()
                if answer["status"] in ("assets_generated", "failed") and not answer["degraded"]:
                    pending.discard(video)
        wall = time.perf_counter() - started
        peak = peak_rss_mib(gateway_pid)
    p50, p99 = median(reads) * 1000, percentile(reads, 99) * 1000
    return [
        Figure(
            f"flood {videos} x {per_video} scenes: status GET p50 during the flood",
            round(p50, 2),
            "ms",
            note=f"{len(reads)} reads",
        ),
        Figure("flood: status GET p99 during the flood", round(p99, 2), "ms", "<= 100", p99 <= 100),
        Figure(
            "flood: videos finished",
            videos - len(pending),
            "videos",
            f"== {videos}",
            not pending and codes.count(202) == videos,
            note=f"{wall:.0f} s; starts answered {sorted(set(codes))}",
        ),
        Figure("flood: gateway peak RSS (VmHWM)", round(peak, 1), "MiB"),
    ]
