"""Plain domain objects for videos and scene results (no gRPC, no SQL)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.common.errors import FailedPrecondition, InvalidArgument, LimitReached
from services.common.summary import RunSummary

DRAFT = "draft"
GENERATING = "generating_images"
ASSETS_GENERATED = "assets_generated"
FAILED = "failed"
# What a degraded answer says when nothing is known about the video.
PROCESSING = "processing"

STATUSES = (DRAFT, GENERATING, ASSETS_GENERATED, FAILED)
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


def now_ms() -> int:
    return int(time.time() * 1000)


def check_status(name: str) -> str:
    if name not in STATUSES:
        raise InvalidArgument(f"unknown status {name!r}; use one of {', '.join(STATUSES)}")
    return name


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


def check_progress(value: int) -> int:
    if not 0 <= value <= 100:
        raise InvalidArgument(f"progress must be between 0 and 100; got {value}")
    return value


@dataclass
class SceneResult:
    scene: int
    state: str
    url: str = ""
    path: str = ""
    content_type: str = ""
    placeholder: bool = False
    provider: str = ""
    attempts: int = 0
    generate_ms: int = 0
    upload_ms: int = 0
    error: str = ""
    cost_usd: float = 0.0
    cost_known: bool = True
    paid_at_ms: int = 0
    prompt: str = ""  # what the image was made from ("": not known)
    reencoded: bool = False
    # While the scene is being made: its latest preview (a partial image's URL) and index.
    preview_url: str = ""
    preview_index: int = 0


@dataclass
class Video:
    video_id: str
    status: str = DRAFT
    progress: int = 0
    scene_count: int = 0
    error: str = ""
    updated_at_ms: int = field(default_factory=now_ms)
    scenes: list[SceneResult] = field(default_factory=list)
    summary: RunSummary = field(default_factory=RunSummary)
    # Scene number -> prompt, as the latest run was started.
    prompts: dict[int, str] = field(default_factory=dict)
    owner: str = ""  # the user it belongs to ("": no one)


@dataclass
class VideoUpdate:
    """A partial update: None means leave unchanged."""

    status: str | None = None
    progress: int | None = None
    scene_count: int | None = None
    error: str | None = None
    summary: RunSummary | None = None
    prompts: dict[int, str] | None = None


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
