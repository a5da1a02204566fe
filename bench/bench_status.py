"""GET /api/video-status: latency healthy and with the store dead (breaker open), and reads
per second through gateway -> status -> SQLite against a route reading the row directly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx

from bench.common import Figure, median, percentile, running_system, wait_done
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


async def _throughput(url: str, video_id: str, seconds: float, workers: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                answer = await client.get("/api/video-status", params={"videoId": video_id})
                if answer.status_code == 200:
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)


def throughput(url: str, video_id: str, seconds: float, workers: int = 16) -> float:
    return asyncio.run(_throughput(url, video_id, seconds, workers))


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
    figures += [
        Figure("status reads/s: gateway -> status -> SQLite", round(median(ours)), "req/s"),
        Figure("status reads/s: FastAPI route reading SQLite directly", round(median(theirs)), "req/s"),
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
