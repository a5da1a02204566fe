"""Helpers for end-to-end tests over the four real processes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import SYSTEM_KEY, logs_of, wait_until
from tools.processes import System, free_port

MODEL = "gpt-image-2"
KEY = SYSTEM_KEY


def provider_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url, "IMAGEGEN_CHAIN": MODEL, **extra}


def start_worker(system: System, name: str = "worker") -> int:
    """A queue worker (`RUNS=queue`) of the system's, metrics on a free port; returns that
    port once the worker says it started."""
    port = free_port()
    system.start_replica(name, "gateway.worker", {"WORKER_METRICS_PORT": str(port)})
    assert wait_until(lambda: "worker started" in logs_of(system, name), timeout=30)
    return port


def scenes(n: int, word: str = "scene") -> list[dict[str, str]]:
    return [{"prompt": f"{word} {i}: a lighthouse in a storm"} for i in range(1, n + 1)]


def post(client: httpx.Client, video_id: str, body_scenes: list[dict[str, str]]) -> httpx.Response:
    return client.post("/api/generate-preview-images", json={"videoId": video_id, "scenes": body_scenes})


def poll_until_done(
    client: httpx.Client, video_id: str, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Poll the status endpoint like the frontend; answer every answer seen."""
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        answer = client.get("/api/video-status", params={"videoId": video_id}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        seen.append(answer.json())
        return seen[-1]["status"] in ("assets_generated", "failed") and not seen[-1]["degraded"]

    assert wait_until(finished, timeout=timeout, every=0.05), f"video not done: {seen[-1] if seen else None}"
    return seen


def assert_progress_never_decreased(seen: list[dict[str, Any]]) -> None:
    progress = [s["progress"] for s in seen if not s["degraded"]]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
