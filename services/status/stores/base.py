"""What a status store does. Every store enforces the rules itself (monotonic progress,
the state machine), so concurrent writers cannot break them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.status.model import DRAFT, STATUSES, Hold, HoldRequest, SceneResult, Spend, UserLimits, Video, VideoUpdate


@dataclass(frozen=True)
class VideosTable:
    """Where the frontend's video status lives (an existing StoryShort database's names)."""

    table: str = "videos"
    id: str = "id"
    status: str = "status"
    progress: str = "image_upload_progress"
    # The column naming the user a video belongs to, where the table has it (StoryShort's
    # `user_id`); without it the owner lives in our own preview_runs.
    owner: str = "user_id"
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

    async def create(self, video_id: str, scene_count: int, owner: str = "") -> Video:
        """The video, inserted when missing; ``owner`` becomes its owner when it has none."""
        ...

    async def record_start(self, owner: str, video_id: str, scenes: int, limits: UserLimits) -> None:
        """Count a user's start against the limits (atomically with the check): raises
        LimitReached (nothing recorded) when it would pass one."""
        ...

    async def get(self, video_id: str) -> Video | None: ...

    async def update(self, video_id: str, change: VideoUpdate) -> Video:
        """Raises NotFound, FailedPrecondition (bad transition)."""
        ...

    async def report_scene(
        self, video_id: str, scene: SceneResult, settles: str = "", then: VideoUpdate | None = None
    ) -> Video:
        """Record a scene's result; ``settles``: the spend hold its image was paid under,
        dropped once the cost is recorded; ``then``: the video's change that follows (a
        run's end: one write, so the video never reads as all scenes in and still
        generating). Each in the same transaction where the store has them. A ``then`` the
        video's status refuses raises FailedPrecondition, the scene recorded all the same."""
        ...

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> Video:
        """Keep the scene's latest preview until its result is reported (a scene with no
        row yet gets one in state "generating"); never its image, never progress."""
        ...

    async def list_stalled(self, older_than_ms: int) -> list[Video]: ...

    async def spend_since(self, since_ms: int, owner: str = "") -> Spend:
        """Images paid for at or after ``since_ms`` (of ``owner``'s videos only, when given):
        their summed cost and how many had no price."""
        ...

    async def reserve_spend(self, request: HoldRequest) -> Hold:
        """Hold spend under the caps, atomically with reading recorded spend and the other
        open holds (across every process using the store); idempotent per id."""
        ...

    async def release_spend(self, reservation_id: str) -> bool:
        """Drop a hold; False when there was none."""
        ...

    async def close(self) -> None: ...
