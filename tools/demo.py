"""`make demo`: post a ten-scene story to the running system, show a progress bar until it
finishes, then a table of the scenes and their image URLs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

import httpx

STORY = [
    "A lighthouse keeper wakes before dawn on a stormy island",
    "She climbs the spiral stairs with a lantern in hand",
    "Through the rain she sees a small boat fighting the waves",
    "She lights the great lamp; its beam sweeps the dark sea",
    "The boat turns toward the light and the sheltered cove",
    "A young fisher stumbles onto the rocks, soaked and shaking",
    "Inside, the keeper wraps him in a blanket by the stove",
    "The storm breaks; morning light spills across the water",
    "They repair the boat's torn sail together on the beach",
    "The fisher waves from the boat as the keeper climbs back up",
]


def bar(progress: int, width: int = 40) -> str:
    filled = width * progress // 100
    return "[" + "#" * filled + "-" * (width - filled) + f"] {progress:3d}%"


def show(status: dict[str, Any]) -> None:
    note = " (degraded)" if status.get("degraded") else ""
    print(f"\r{bar(int(status.get('progress', 0)))} {status.get('status', '?')}{note}   ", end="", flush=True)


def follow(client: httpx.Client, video_id: str, timeout: float) -> dict[str, Any]:
    """The video's progress as the gateway pushes it (its event stream), until the run ends;
    polling the status route if the stream is refused or lost."""
    status: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        with client.stream("GET", f"/api/videos/{video_id}/events", timeout=httpx.Timeout(10, read=60)) as stream:
            if stream.status_code == 200:
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:") and event == "status":
                        status = json.loads(line.removeprefix("data:"))
                        show(status)
                    elif line.startswith("data:") and event == "end":
                        return status
                    if time.monotonic() > deadline:
                        return status
    except httpx.HTTPError:
        pass  # poll instead
    while time.monotonic() < deadline:
        status = client.get("/api/video-status", params={"videoId": video_id}).json()
        show(status)
        if status.get("status") in ("assets_generated", "failed") and not status.get("degraded"):
            break
        time.sleep(0.5)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    port = os.environ.get("GATEWAY_PORT") or "8080"
    parser.add_argument("--url", default=f"http://127.0.0.1:{port}", help="the gateway (default: GATEWAY_PORT's)")
    parser.add_argument("--video-id", default=f"demo-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the video")
    args = parser.parse_args()
    with httpx.Client(base_url=args.url, timeout=10) as client:
        try:
            started = client.post(
                "/api/generate-preview-images",
                json={"videoId": args.video_id, "scenes": [{"prompt": p} for p in STORY]},
            )
        except httpx.HTTPError as exc:
            print(f"cannot reach the gateway at {args.url} ({exc}); is `make run` going?", file=sys.stderr)
            return 1
        if started.status_code != 202:
            print(f"the gateway refused the story: {started.status_code} {started.text}", file=sys.stderr)
            return 1
        print(f"video {args.video_id}: {len(STORY)} scenes; watch it at {args.url}/videos/{args.video_id}")
        status = follow(client, args.video_id, args.timeout)
        print()
    summary = status.get("summary") or {}
    print(
        f"\nstatus: {status.get('status')}  generated: {summary.get('generated', 0)}  "
        f"placeholders: {summary.get('placeholders', 0)}  failed: {summary.get('failed', 0)}  "
        f"elapsed: {summary.get('elapsedMs', 0) / 1000:.1f} s\n"
    )
    print(f"{'scene':>5}  {'provider':<22} {'kind':<11} url")
    for image in status.get("images", []):
        kind = "placeholder" if image["placeholder"] else "generated"
        print(f"{image['scene']:>5}  {image['provider']:<22} {kind:<11} {image['url']}")
    for failed in status.get("failedScenes", []):
        print(f"{failed['scene']:>5}  {'-':<22} {'failed':<11} {failed['error']}")
    return 0 if status.get("status") == "assets_generated" else 1


if __name__ == "__main__":
    sys.exit(main())
