"""Rows to domain objects, shared by the stores: the run row's columns are the video's run
fields (services/common/video.py), so a field added there is selected, read and written by
every store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.common.video import RUN_FIELDS, SCENE_COLUMNS, run_from_row, run_to_row
from services.status.model import SCENE_GENERATING, SceneResult, Video, VideoUpdate
from services.status.stores.base import VideosTable

# The run row's columns as a SELECT names them, the run row aliased "r" (the names are ours).
RUN_SELECT = ", ".join(f"r.{name}" for name in RUN_FIELDS)
# A run starts: an earlier run's previews go (those of scenes with a result, and the rows of
# scenes that only ever had a preview). "?" placeholders (PostgreSQL: "%s").
CLEAR_PREVIEWS = (
    "UPDATE preview_scenes SET preview_url = '', preview_index = 0 WHERE video_id = ? AND preview_url <> ''",
    f"DELETE FROM preview_scenes WHERE video_id = ? AND state = '{SCENE_GENERATING}'",
)
# A scene's result is in: its preview goes, even when the result itself was not taken (a
# failure never replaces a stored image).
DROP_PREVIEW = "UPDATE preview_scenes SET preview_url = '', preview_index = 0 WHERE video_id = ? AND scene = ?"


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
    """A video from a row with `id`, `status`, `progress`, `owner` (the videos table's, by
    our names) and the run row's columns (missing or NULL: no run row yet)."""
    values = dict(row)
    return Video(
        video_id=str(values["id"]),
        status=(videos or VideosTable()).status_of(values["status"]),
        progress=int(values["progress"] or 0),
        scenes=scenes,
        owner=str(values.get("owner") or ""),
        **run_from_row(values),
    )


def run_columns(change: VideoUpdate, resumed: bool) -> dict[str, object]:
    """Our run table's columns that a partial update sets (a resumed run clears its error)."""
    return run_to_row({"error": ""} if resumed else {}) | run_to_row(change.run)
