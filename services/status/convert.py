"""Domain objects <-> protobuf messages. The dataclasses hold only plain values, so their
attribute dicts go straight to the messages (dataclasses.asdict deep-copies, and was the
largest cost of a status read: bench/RESULTS.md)."""

from __future__ import annotations

from dataclasses import fields

from services.common.summary import RunSummary, summary_from_values
from services.status.model import SceneResult, Video
from storyshort.status.v1 import status_pb2


def summary_to_pb(summary: RunSummary) -> status_pb2.RunSummary:
    return status_pb2.RunSummary(**vars(summary))


def summary_from_pb(message: status_pb2.RunSummary) -> RunSummary:
    return summary_from_values({f.name: getattr(message, f.name) for f in fields(RunSummary)})


def scene_to_pb(scene: SceneResult) -> status_pb2.SceneResult:
    return status_pb2.SceneResult(**vars(scene))


def scene_from_pb(message: status_pb2.SceneResult) -> SceneResult:
    return SceneResult(**{f.name: getattr(message, f.name) for f in fields(SceneResult)})


def video_to_pb(video: Video) -> status_pb2.Video:
    return status_pb2.Video(
        video_id=video.video_id,
        status=video.status,
        progress=video.progress,
        scene_count=video.scene_count,
        error=video.error,
        updated_at_ms=video.updated_at_ms,
        scenes=[scene_to_pb(s) for s in video.scenes],
        summary=summary_to_pb(video.summary),
        prompts=[status_pb2.ScenePrompt(scene=n, prompt=p) for n, p in sorted(video.prompts.items())],
        owner=video.owner,
    )


def video_from_pb(message: status_pb2.Video) -> Video:
    return Video(
        video_id=message.video_id,
        status=message.status,
        progress=message.progress,
        scene_count=message.scene_count,
        error=message.error,
        updated_at_ms=message.updated_at_ms,
        scenes=[scene_from_pb(s) for s in message.scenes],
        summary=summary_from_pb(message.summary),
        prompts={p.scene: p.prompt for p in message.prompts},
        owner=message.owner,
    )
