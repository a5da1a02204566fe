"""The status answer of GET /api/video-status, built from the status service's answer (or
from what the gateway knows when that service cannot answer); who may read it is
gateway/status_reader.py's business."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from gateway import metrics
from gateway.vocabulary import PROCESSING, QUEUED, RUNNING, SCENE_FAILED, SCENE_STORED
from services.common.objects import PUBLIC_PREFIX
from services.common.video import answer_values
from storyshort.status.v1 import status_pb2


def current_url(stored: str, origin: str) -> str:
    """A stored public URL on today's address: its object location (bucket, path and
    version) kept, its origin replaced, so moving the gateway breaks no earlier link."""
    at = stored.find(PUBLIC_PREFIX + "/")
    return origin + stored[at:] if at > 0 else stored


def queued_json(video_id: str, position: int) -> dict[str, Any]:
    """The status answer of a video waiting for its turn to run."""
    return {
        "videoId": video_id,
        "status": QUEUED,
        "progress": 0,
        "degraded": False,
        "images": [],
        "queuePosition": position,
    }


def status_json(answer: status_pb2.GetVideoResponse, origin: str) -> dict[str, Any]:
    """The answer of GET /api/video-status, shaped as VideoStatusOut (the schema in the
    OpenAPI document). The video's own fields come from its one definition
    (services/common/video.py), as the schema's do; what is added here is made from the
    scenes and the answer. GET /api/video-status holds it to VideoStatusOut on its way out
    (the route's response_model); the event stream sends the same dict. Image URLs are
    built on ``origin``, where public images are served now."""
    video = answer.video
    return {
        **answer_values(video),
        "degraded": answer.degraded,
        "images": [
            {
                "scene": sc.scene,
                "url": current_url(sc.url, origin),
                "placeholder": sc.placeholder,
                "provider": sc.provider,
                "reason": sc.error if sc.placeholder else "",
                "costUsd": sc.cost_usd if sc.cost_known else None,
                "reencoded": sc.reencoded,
                # The earlier route's names for the same facts (README: Migrating).
                "index": sc.scene - 1,
                "success": True,
                "isPlaceholder": sc.placeholder,
            }
            for sc in video.scenes
            if sc.state == SCENE_STORED
        ],
        "failedScenes": [
            {"scene": sc.scene, "error": sc.error, "index": sc.scene - 1, "success": False}
            for sc in video.scenes
            if sc.state == SCENE_FAILED
        ],
        # Scenes still being made, with their latest preview (a partial image).
        "previews": [
            {"scene": sc.scene, "previewUrl": current_url(sc.preview_url, origin), "index": sc.preview_index}
            for sc in video.scenes
            if sc.preview_url
        ],
        "stalled": answer.stalled,
        "ageMs": answer.age_ms,
        "degradedReason": answer.degraded_reason,
        "spendUsd": round(sum(sc.cost_usd for sc in video.scenes), 6)
        if all(sc.cost_known for sc in video.scenes)
        else None,
    }


def is_running(answer: dict[str, Any]) -> bool:
    """Whether a status answer may still change by itself: generating, waiting its turn, or
    not known for sure (degraded). Any other status (done, failed, a draft, a status the
    frontend owns) stays until someone starts a run."""
    return bool(answer["degraded"]) or answer["status"] in RUNNING


class LastKnown:
    """The gateway's own memory of status answers, for when the status service is down."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[status_pb2.GetVideoResponse, float]] = OrderedDict()
        self._size = size

    def remember(self, answer: status_pb2.GetVideoResponse) -> None:
        self._items[answer.video.video_id] = (answer, time.monotonic())
        self._items.move_to_end(answer.video.video_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def degraded(self, video_id: str, reason: str) -> status_pb2.GetVideoResponse:
        known = self._items.get(video_id)
        if known is None:
            metrics.STATUS_DEGRADED.labels("unknown").inc()
            return status_pb2.GetVideoResponse(
                video=status_pb2.Video(video_id=video_id, status=PROCESSING), degraded=True, degraded_reason=reason
            )
        answer, seen = known
        metrics.STATUS_DEGRADED.labels("last_known").inc()
        return status_pb2.GetVideoResponse(
            video=answer.video,
            degraded=True,
            degraded_reason=reason,
            age_ms=answer.age_ms + int((time.monotonic() - seen) * 1000),
        )
