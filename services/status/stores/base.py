"""What a status store does. Every store enforces the rules itself (monotonic progress,
the state machine), so concurrent writers cannot break them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.status.model import DRAFT, STATUSES, SceneResult, Spend, Video, VideoUpdate


@dataclass(frozen=True)
class VideosTable:
    """Where the frontend's video status lives (an existing StoryShort database's names)."""

    table: str = "videos"
    id: str = "id"
    status: str = "status"
    progress: str = "image_upload_progress"
    # The values written to the status column, where they differ from our names
    # ((our name, column value), ...): the frontend's own vocabulary.
    values: tuple[tuple[str, str], ...] = ()

    def column_value(self, status: str) -> str:
        """What the status column holds for one of our statuses."""
        return dict(self.values).get(status, status)

    def status_of(self, value: object) -> str:
        """Our status for a column value: NULL is a draft; a value this system does not own
        (`processing`, `rendering`, ...) is answered as it is and counts as not generating."""
        if value is None:
            return DRAFT
        text = str(value)
        for status in STATUSES:
            if self.column_value(status) == text:
                return status
        return text


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
