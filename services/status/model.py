"""Plain domain objects for videos and scene results (no gRPC, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, LimitReached
from services.common.video import ASSETS_GENERATED as ASSETS_GENERATED
from services.common.video import DRAFT as DRAFT
from services.common.video import FAILED as FAILED
from services.common.video import GENERATING as GENERATING
from services.common.video import RUN_FIELDS
from services.common.video import STATUSES as STATUSES
from services.common.video import SceneResult as SceneResult
from services.common.video import Video as Video
from services.common.video import check_progress as check_progress
from services.common.video import check_status as check_status
from services.common.video import now_ms as now_ms

# What a degraded answer says when nothing is known about the video.
PROCESSING = "processing"

# The one state machine. A status may always be set again (repeating is harmless).
TRANSITIONS: dict[str, frozenset[str]] = {
    DRAFT: frozenset({GENERATING, FAILED}),
    GENERATING: frozenset({ASSETS_GENERATED, FAILED}),
    FAILED: frozenset({GENERATING}),  # resume
    ASSETS_GENERATED: frozenset({GENERATING}),  # re-run: regenerates only missing scenes
}
SCENE_STATES = ("stored", "failed")
# A scene with a preview and no result yet (never reported as a result).
SCENE_GENERATING = "generating"


def check_transition(current: str, new: str) -> None:
    """Raise FailedPrecondition unless ``current`` may move to ``new``. A status this system
    does not own (an existing StoryShort row's `processing`, `rendering`, `completed`, ...)
    counts as not generating: a run may start, as from a draft."""
    if new == current:
        return
    allowed = TRANSITIONS.get(current, TRANSITIONS[DRAFT])
    if new not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing"
        raise FailedPrecondition(f"a video in status {current!r} cannot move to {new!r} (allowed: {options})")


@dataclass(init=False)
class VideoUpdate:
    """A partial update: what is not given (None) stays. ``status`` and ``progress`` live in
    the frontend's videos table; the rest are run-row fields (services/common/video.py), such
    as ``scene_count``, ``error``, ``summary``, ``prompts`` (empty: the stored ones stay)."""

    status: str | None
    progress: int | None
    run: dict[str, Any] = field(default_factory=dict)

    def __init__(self, status: str | None = None, progress: int | None = None, **run: Any) -> None:
        unknown = set(run) - set(RUN_FIELDS)
        if unknown:
            raise TypeError(f"not a field of a video's run row: {', '.join(sorted(unknown))}")
        self.status, self.progress = status, progress
        self.run = {name: value for name, value in run.items() if value is not None and value != {}}


@dataclass(frozen=True)
class Spend:
    usd: float = 0.0
    unpriced_images: int = 0


CAPS = ("daily", "video", "owner")  # in this order, the first of equal rooms is the tightest


@dataclass(frozen=True)
class SpendCaps:
    """Caps a hold is checked against (None: no such cap)."""

    daily_usd: float | None = None
    video_usd: float | None = None
    owner_usd: float | None = None
    since_ms: int = 0  # the UTC day's start: the daily and owner caps count spend from it


@dataclass(frozen=True)
class HoldRequest:
    reservation_id: str
    video_id: str
    owner: str
    usd: float
    caps: SpendCaps
    ttl_ms: int


@dataclass(frozen=True)
class Hold:
    reservation_id: str
    granted_usd: float
    # Each cap's room before this hold (only the caps given).
    rooms: dict[str, float] = field(default_factory=dict)

    @property
    def cap(self) -> str:
        """The tightest cap ("daily" | "video" | "owner"; "" with none)."""
        return min(self.rooms, key=lambda c: self.rooms[c]) if self.rooms else ""

    @property
    def left_usd(self) -> float:
        return self.rooms[self.cap] if self.rooms else 0.0


def hold_rooms(row: dict[str, object]) -> dict[str, float]:
    """Each cap's room from a reserve_preview_spend row (NULL: no such cap)."""
    return {cap: float(str(row[f"{cap}_left_usd"])) for cap in CAPS if row.get(f"{cap}_left_usd") is not None}


def decide_hold(request: HoldRequest, spent: dict[str, float], held: dict[str, float]) -> Hold:
    """What a hold gets, from each cap's recorded spend and other open holds (the
    SQLite store's side of sql/postgres/006_spend_holds.sql, which decides the same)."""
    limits = {"daily": request.caps.daily_usd, "video": request.caps.video_usd}
    if request.owner:
        limits["owner"] = request.caps.owner_usd
    rooms = {cap: limit - spent[cap] - held[cap] for cap, limit in limits.items() if limit is not None}
    tightest = min(rooms.values(), default=request.usd)
    return Hold(request.reservation_id, max(0.0, min(request.usd, tightest)), rooms)


def progress_for(stored: int, scene_count: int) -> int:
    if scene_count <= 0:
        return 0
    return min(100, (stored * 100) // scene_count)


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class UserLimits:
    videos_per_hour: int = 0  # 0: no limit
    scenes_per_day: int = 0

    @property
    def any(self) -> bool:
        return bool(self.videos_per_hour or self.scenes_per_day)


def check_limits(starts: list[tuple[int, int]], scenes: int, limits: UserLimits, now: int) -> None:
    """Refuse a start of ``scenes`` scenes when it would take the user over a limit, given
    the user's starts of the last day ((at_ms, scenes), any order); say when it fits."""
    if limits.videos_per_hour:
        hour = sorted(at for at, _ in starts if at > now - HOUR_MS)
        if len(hour) + 1 > limits.videos_per_hour:
            frees = hour[len(hour) - limits.videos_per_hour] + HOUR_MS
            raise LimitReached(
                f"{len(hour)} videos started in the last hour, the most one user may start "
                f"({limits.videos_per_hour}); start again in {_wait(frees, now)}",
                (frees - now) / 1000,
            )
    if limits.scenes_per_day:
        if scenes > limits.scenes_per_day:
            raise InvalidArgument(f"{scenes} scenes is more than one user may start in a day ({limits.scenes_per_day})")
        day = sorted((at, n) for at, n in starts if at > now - DAY_MS)
        used = sum(n for _, n in day)
        if used + scenes > limits.scenes_per_day:
            frees = now + DAY_MS
            left = used
            for at, n in day:  # the oldest starts leave the window first
                left -= n
                if left + scenes <= limits.scenes_per_day:
                    frees = at + DAY_MS
                    break
            raise LimitReached(
                f"{used} scenes started in the last day; {scenes} more would pass the {limits.scenes_per_day} one "
                f"user may start; start again in {_wait(frees, now)}",
                (frees - now) / 1000,
            )


def _wait(at: int, now: int) -> str:
    seconds = max(1, (at - now + 999) // 1000)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
