"""Queue workers: scenes per second with 1, 2 and 4 workers (RUNS=queue, real PostgreSQL),
provider latency 200 ms, per-provider limit 6, each worker running one video at a time with
2 scenes at once, so the provider limit caps 4 workers at 6 images in flight."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg

from bench.common import Figure, running_system, wait_done
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry

MODEL = "gpt-image-2"
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def throughput(workers: int, videos: int, per_video: int, latency: float, limit: int) -> float:
    name = f"storyshort_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        with FakeOpenAI(models=[model_entry(MODEL)]) as fake:
            fake.script(MODEL, Ok(latency=latency, size=(0, 0)))
            env = {
                "OPENAI_API_KEY": "sk-bench-0000000000",
                "OPENAI_BASE_URL": fake.base_url,
                "IMAGEGEN_CHAIN": MODEL,
                "STATUS_STORE": "postgres",
                "DATABASE_URL": dsn,
                "RUNS": "queue",
                "WORKER_CONCURRENCY": "1",
                "SCENE_CONCURRENCY": "2",
                "IMAGEGEN_CONCURRENCY": str(limit),
                "IMAGE_SIZE": "256x256",
            }
            with running_system(env) as system, httpx.Client(base_url=system.gateway_url, timeout=30) as c:
                for n in range(workers):
                    system.start_replica(f"worker-{n}", "gateway.worker", {})
                c.post("/api/generate-preview-images", json={"videoId": "warm", "scenes": [{"prompt": "w"}]})
                wait_done(c, "warm", timeout=60)
                started = time.perf_counter()
                for v in range(videos):
                    c.post(
                        "/api/generate-preview-images",
                        json={"videoId": f"w{v}", "scenes": [{"prompt": f"{v}-{s}"} for s in range(per_video)]},
                    )
                for v in range(videos):
                    wait_done(c, f"w{v}", timeout=300, every=0.02)
                return videos * per_video / (time.perf_counter() - started)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def workers(quick: bool) -> list[Figure]:
    videos, per_video, latency, limit = (8, 4, 0.2, 6) if quick else (16, 6, 0.2, 6)
    try:
        psycopg.connect(ADMIN, connect_timeout=3).close()
    except psycopg.OperationalError:
        return [Figure("queue workers: skipped, no PostgreSQL on 127.0.0.1:5432", 0, "")]
    rates = {n: throughput(n, videos, per_video, latency, limit) for n in (1, 2, 4)}
    figures = []
    for n, rate in rates.items():
        ideal = min(2 * n, limit) / latency
        figures.append(
            Figure(
                f"queue, {n} worker(s): scenes per second",
                round(rate, 2),
                "scenes/s",
                note=f"ideal {ideal:.0f}/s = min(2 x {n}, limit {limit}) / {latency} s",
            )
        )
    figures.append(Figure("queue: 2 workers / 1 worker", round(rates[2] / rates[1], 2), "ratio", note="ideal 2.0"))
    figures.append(
        Figure(
            "queue: 4 workers / 1 worker",
            round(rates[4] / rates[1], 2),
            "ratio",
            note="ideal 3.0: the provider limit (6) caps 4 workers x 2 scenes",
        )
    )
    return figures
