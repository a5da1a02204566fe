"""Answers that wait for a run: the Server-Sent Events framing of a video's status answers,
and a POST's `Prefer: wait=N` (RFC 7240) with the earlier route's per-scene results."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from gateway.answers import is_running
from gateway.auth import Caller
from gateway.errors import HTTPError
from gateway.events import VideoEvents
from gateway.status_reader import Seen, visible
from services.common.errors import InvalidArgument

# Browsers reconnect an EventSource whose stream closed after this many ms.
RECONNECT_MS = 2000
_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?\s*$", re.IGNORECASE)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def sse_stream(video_id: str, answers: AsyncGenerator[Seen | None, None], caller: Caller) -> AsyncIterator[str]:
    """`status` events, a `preview` event (`scene`, `url`, `index`) for each scene's new
    preview, `: heartbeat` comments for None, and `end` after the last answer.
    Each answer is checked against the caller as it comes (the video's owner is known when
    the stream opens, but an answer during an outage may not know it). A stream that may not
    go on ends with an `end` event that says why (`reason`, `message`): the caller's access
    token expired, or the answer is not the caller's to see. A stream cut while the run goes
    on (shutdown) closes without `end`. However it ends, ``answers`` is closed with it."""
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        shown: dict[int, str] = {}  # each scene's preview already pushed
        async for seen in answers:
            left = caller.seconds_left()
            if left is not None and left <= 0:
                yield _event("end", {"reason": "TOKEN_EXPIRED", "message": "the access token expired; sign in again"})
                return
            if seen is None:
                yield ": heartbeat\n\n"
                continue
            try:
                answer = visible(seen, video_id, caller)
            except HTTPError as exc:
                yield _event("end", {"reason": exc.reason or exc.code, "message": exc.message})
                return
            for preview in answer.get("previews", ()):
                if shown.get(preview["scene"]) != preview["previewUrl"]:
                    shown[preview["scene"]] = preview["previewUrl"]
                    yield _event(
                        "preview", {"scene": preview["scene"], "url": preview["previewUrl"], "index": preview["index"]}
                    )
            if not is_running(answer):  # the run's last answer: it and `end` go in one write
                yield _event("status", answer) + _event("end", {})
                return
            yield _event("status", answer)
        # The answers stopped while the run goes on (the gateway is shutting down): no `end`,
        # so the follower reconnects (to another replica) instead of taking the run for over.
    finally:
        await answers.aclose()  # the follow ends now, not when the collector finds it


def prefer_wait(header: str | None, most: float) -> float | None:
    """The `wait` preference of a Prefer header in seconds, capped at ``most`` (None: not
    asked). Other preferences are ignored, as RFC 7240 allows; a malformed wait is refused."""
    if not header:
        return None
    for preference in header.split(","):
        name = preference.split(";")[0]
        if name.strip().lower().startswith("wait"):
            match = _WAIT.match(name)
            if match is None:
                raise InvalidArgument(
                    f"Prefer: {name.strip()!r} is not a wait preference; write wait=N (seconds)", field="Prefer"
                )
            return min(float(match.group(1)), most)
    return None


async def ended_within(events: VideoEvents, video_id: str, seconds: float, caller: Caller) -> dict[str, Any] | None:
    """The video's status answer once its run has ended, or None if it is still running
    after ``seconds`` (or the answer is not ``caller``'s to see)."""
    if seconds <= 0:
        return None
    try:
        async with asyncio.timeout(seconds):
            async for seen in events.follow(video_id):
                if seen is not None and not is_running(seen.body):
                    return visible(seen, video_id, caller)
    except (TimeoutError, HTTPError):
        return None
    return None


def earlier_results(answer: dict[str, Any]) -> dict[str, Any]:
    """The finished run as the earlier route answered it: one result per scene, 0-based
    `index`, `url`, `success`, `isPlaceholder` (and `error` for a scene that failed), next
    to the status answer's own fields."""
    results = [
        {
            "index": image["index"],
            "scene": image["scene"],
            "url": image["url"],
            "success": True,
            "isPlaceholder": image["isPlaceholder"],
        }
        for image in answer["images"]
    ]
    results += [
        {
            "index": failed["index"],
            "scene": failed["scene"],
            "url": None,
            "success": False,
            "isPlaceholder": False,
            "error": failed["error"],
        }
        for failed in answer["failedScenes"]
    ]
    results.sort(key=lambda r: r["index"])
    return {
        "status": answer["status"],
        "progress": answer["progress"],
        "results": results,
        "placeholdersUsed": sum(1 for r in results if r["isPlaceholder"]),
        "summary": answer.get("summary"),
    }
