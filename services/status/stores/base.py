"""What a status store does. Every store enforces the rules itself (monotonic progress,
the state machine), so concurrent writers cannot break them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.status.model import SceneResult, Spend, Video, VideoUpdate


@dataclass(frozen=True)
class VideosTable:
    """Where the frontend's video status lives (an existing StoryShort database's names)."""

    table: str = "videos"
    id: str = "id"
    status: str = "status"
    progress: str = "image_upload_progress"


class StoreUnavailable(Exception):
    """The store could not answer (down, slow, connection lost)."""


class StatusStore(Protocol):
    name: str

    async def migrate(self) -> None: ...

    async def create(self, video_id: str, scene_count: int) -> Video: ...

    async def get(self, video_id: str) -> Video | None: ...

    async def update(self, video_id: str, change: VideoUpdate) -> Video:
        """Raises NotFound, FailedPrecondition (bad transition)."""
        ...

    async def report_scene(self, video_id: str, scene: SceneResult) -> Video: ...

    async def list_stalled(self, older_than_ms: int) -> list[Video]: ...

    async def spend_since(self, since_ms: int) -> Spend:
        """Images paid for at or after ``since_ms``: their summed cost and how many had no price."""
        ...

    async def close(self) -> None: ...
