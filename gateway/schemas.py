"""The HTTP API's JSON shapes (they appear in the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from services.common.summary import FIELD_TYPES as SUMMARY_FIELDS
from services.common.summary import RunSummary, camel
from services.common.validation import SCENE_MAX
from services.common.video import FIELD_TYPES as VIDEO_FIELDS
from services.common.video import SHOWN, SHOWN_NAMES, Shown


class SceneIn(BaseModel):
    prompt: str = Field(description="The scene's image prompt (1-32000 characters)")
    index: int | None = Field(
        None,
        ge=0,
        le=SCENE_MAX - 1,
        description="0-based scene index as the earlier frontend sends it; scene number = index + 1",
    )


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    videoId: str = Field(description="Letters, digits, '-' and '_', at most 128 characters")
    scenes: list[SceneIn] = Field(
        default_factory=list,
        description="The scenes; leave out (or empty) to resume the video with the prompts of its latest run",
    )


class RegenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        None, description="a new prompt for the scene (1-32000 characters); leave out to keep it"
    )


class GenerateOut(BaseModel):
    videoId: str
    status: str
    scenes: int
    alreadyRunning: bool = False


class ImageOut(BaseModel):
    scene: int
    url: str
    placeholder: bool
    provider: str
    reason: str = Field("", description="why a placeholder was used: budget, every provider failed, ...")
    costUsd: float | None = Field(0.0, description="estimated cost of this image; null: its model has no price")
    reencoded: bool = Field(False, description="re-encoded (same pixel size, lossy) to fit the bucket's size limit")
    index: int = Field(description="the earlier route's name: 0-based scene index (scene - 1)")
    success: bool = Field(True, description="the earlier route's name: the scene has an image")
    isPlaceholder: bool = Field(description="the earlier route's name for `placeholder`")


class PreviewOut(BaseModel):
    scene: int
    previewUrl: str = Field(description="the scene's latest preview: a partial image, until its image is in")
    index: int = Field(description="which partial image (0-based)")


class FailedSceneOut(BaseModel):
    scene: int
    error: str
    index: int = Field(description="the earlier route's name: 0-based scene index (scene - 1)")
    success: bool = Field(False, description="the earlier route's name: always false here")


# The answer's summary, derived from the one definition (services/common/summary.py):
# camelCase names, the declared types; spend is null where it is unknown.
SummaryOut = create_model(
    "SummaryOut",
    **{camel(name): ((kind | None) if kind is float else kind, Field(kind())) for name, kind in SUMMARY_FIELDS.items()},  # type: ignore[call-overload]
)


def _video_field(name: str, shown: Shown) -> tuple[Any, Any]:
    """A video field of the status answer, as its one definition declares it."""
    if shown.schema is RunSummary:
        return SummaryOut | None, Field(None, description=shown.description or None)
    kind = shown.schema or VIDEO_FIELDS[name]
    default = ... if shown.required else kind()  # a queued answer leaves the others out
    return kind, Field(default, description=shown.description or None, **shown.limits)


# The video's own fields of the status answer (services/common/video.py: Video's `shown`).
VideoFieldsOut = create_model(
    "VideoFieldsOut",
    **{SHOWN_NAMES[name]: _video_field(name, shown) for name, shown in SHOWN.items()},  # type: ignore[call-overload]
)


class VideoStatusOut(VideoFieldsOut):
    degraded: bool
    images: list[ImageOut]
    failedScenes: list[FailedSceneOut] = []
    previews: list[PreviewOut] = Field(
        [], description="scenes still being made, each with its latest preview (IMAGEGEN_PARTIAL_IMAGES)"
    )
    stalled: bool = False
    ageMs: int = 0
    degradedReason: str = ""
    spendUsd: float | None = Field(
        0.0, description="estimated spend on this video's images, all runs; null when an image had no price"
    )
    queuePosition: int | None = Field(
        None, description="with status `queued`: the video's place in the gateway's waiting line (1: next)"
    )


class ResultOut(BaseModel):
    """One scene of a run that ended, as the earlier route answered it."""

    index: int = Field(description="0-based scene index (scene - 1)")
    scene: int
    url: str | None = Field(description="the scene's image; null for a scene that failed")
    success: bool
    isPlaceholder: bool
    error: str | None = Field(None, description="why the scene failed (only when `success` is false)")


class GenerateWaitedOut(GenerateOut):
    """A start with `Prefer: wait=N` whose run ended within N seconds."""

    progress: int = Field(ge=0, le=100)
    results: list[ResultOut] = Field(description="one per scene, by index")
    placeholdersUsed: int
    summary: SummaryOut | None = Field(None, description="the run")


class FieldViolation(BaseModel):
    field: str
    description: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    reason: str | None = Field(
        None,
        description="a stable, machine-readable reason (google.rpc ErrorInfo); the code where no finer one applies",
    )
    fieldViolations: list[FieldViolation] | None = Field(None, description="the request fields at fault")


class ErrorOut(BaseModel):
    error: ErrorDetail
