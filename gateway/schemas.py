"""The HTTP API's JSON shapes (they appear in the OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SceneIn(BaseModel):
    prompt: str = Field(description="The scene's image prompt (1-32000 characters)")
    index: int | None = Field(
        None, description="0-based scene index as the earlier frontend sends it; scene number = index + 1"
    )


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    videoId: str = Field(description="Letters, digits, '-' and '_', at most 128 characters")
    scenes: list[SceneIn] = Field(
        default_factory=list,
        description="The scenes; leave out (or empty) to resume the video with the prompts of its latest run",
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


class FailedSceneOut(BaseModel):
    scene: int
    error: str


class SummaryOut(BaseModel):
    generated: int = 0
    placeholders: int = 0
    failed: int = 0
    hardProviderFailures: int = 0
    providerAttempts: int = 0
    elapsedMs: int = 0
    spendUsd: float | None = Field(0.0, description="estimated spend of the run; null when an image had no price")
    unpricedImages: int = 0


class VideoStatusOut(BaseModel):
    videoId: str
    status: str
    progress: int = Field(ge=0, le=100)
    degraded: bool
    images: list[ImageOut]
    failedScenes: list[FailedSceneOut] = []
    sceneCount: int = 0
    error: str = ""
    stalled: bool = False
    ageMs: int = 0
    degradedReason: str = ""
    spendUsd: float | None = Field(
        0.0, description="estimated spend on this video's images, all runs; null when an image had no price"
    )
    summary: SummaryOut | None = Field(None, description="the latest run")
    updatedAtMs: int = Field(0, description="when the video last changed, ms since the epoch (0: not known)")
    queuePosition: int | None = Field(
        None, description="with status `queued`: the video's place in the gateway's waiting line (1: next)"
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail
