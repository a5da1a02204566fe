"""Plain domain objects for videos and scene results (no gRPC, no SQL)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.common.errors import FailedPrecondition, InvalidArgument
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


def progress_for(stored: int, scene_count: int) -> int:
    if scene_count <= 0:
        return 0
    return min(100, (stored * 100) // scene_count)
