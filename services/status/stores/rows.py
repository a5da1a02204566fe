"""Rows to domain objects, shared by the SQL stores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from services.common.summary import RunSummary, summary_from_values
from services.status.model import SCENE_GENERATING, SceneResult, Video, VideoUpdate
from services.status.stores.base import VideosTable

SCENE_COLUMNS = tuple(f.name for f in fields(SceneResult))
# A run starts: an earlier run's previews go (those of scenes with a result, and the rows of
# scenes that only ever had a preview). "?" placeholders (PostgreSQL: "%s").
CLEAR_PREVIEWS = (
    "UPDATE preview_scenes SET preview_url = '', preview_index = 0 WHERE video_id = ? AND preview_url <> ''",
    f"DELETE FROM preview_scenes WHERE video_id = ? AND state = '{SCENE_GENERATING}'",
)
# A scene's result is in: its preview goes, even when the result itself was not taken (a
# failure never replaces a stored image).
DROP_PREVIEW = "UPDATE preview_scenes SET preview_url = '', preview_index = 0 WHERE video_id = ? AND scene = ?"


def summary_to_json(summary: RunSummary) -> str:
    return json.dumps(asdict(summary))


def summary_from_json(text: str | None) -> RunSummary:
    try:
        data = json.loads(text or "{}")
        return summary_from_values(data if isinstance(data, dict) else {})
    except (ValueError, TypeError):
        return RunSummary()


def prompts_to_json(prompts: dict[int, str]) -> str:
    return json.dumps([[scene, prompt] for scene, prompt in sorted(prompts.items())])


def prompts_from_json(text: str | None) -> dict[int, str]:
    try:
        return {int(scene): str(prompt) for scene, prompt in json.loads(text or "[]")}
    except (ValueError, TypeError):
        return {}


def scene_from_row(row: Sequence[Any]) -> SceneResult:
    values = dict(zip(SCENE_COLUMNS, row, strict=True))
    values["placeholder"] = bool(values["placeholder"])
    values["cost_known"] = bool(values["cost_known"])
    values["reencoded"] = bool(values["reencoded"])
    values["preview_url"] = str(values["preview_url"] or "")
    values["preview_index"] = int(values["preview_index"] or 0)
    values["prompt"] = str(values["prompt"] or "")
    values["cost_usd"] = float(values["cost_usd"] or 0.0)
    return SceneResult(**values)


def video_from_row(row: Mapping[str, Any], scenes: list[SceneResult], videos: VideosTable | None = None) -> Video:
    return Video(
        video_id=str(row["id"]),
        status=(videos or VideosTable()).status_of(row["status"]),
        progress=int(row["progress"] or 0),
        scene_count=int(row["scene_count"] or 0),
        error=str(row["error"] or ""),
        updated_at_ms=int(row["updated_at_ms"] or 0),
        scenes=scenes,
        summary=summary_from_json(row["summary"]),
        prompts=prompts_from_json(row["prompts"]),
        owner=str(row["owner"] or ""),
    )


def run_columns(change: VideoUpdate, resumed: bool) -> dict[str, object]:
    """Our run table's columns that a partial update sets (a resumed run clears its error)."""
    columns: dict[str, object] = {"error": ""} if resumed else {}
    if change.scene_count is not None:
        columns["scene_count"] = change.scene_count
    if change.error is not None:
        columns["error"] = change.error
    if change.summary is not None:
        columns["summary"] = summary_to_json(change.summary)
    if change.prompts:
        columns["prompts"] = prompts_to_json(change.prompts)
    return columns
