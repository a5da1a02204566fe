"""Start a video, read its status, and its page."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.answers import queued_json, status_json
from gateway.breakers import BreakerOpen, ServiceDown, ServiceRefused
from gateway.deps import ApiKeyDep, ClientsDep, LastKnownDep, RunnerDep, SettingsDep
from gateway.errors import service_error_response
from gateway.page import video_page
from gateway.routes import ERRORS, NO_STORE
from gateway.scenes import parse_scenes, regenerated_scenes, stored_scenes
from gateway.schemas import GenerateIn, GenerateOut, RegenerateIn, VideoStatusOut
from services.common import validation

router = APIRouter()


@router.post(
    "/api/generate-preview-images",
    status_code=202,
    response_model=GenerateOut,
    responses=ERRORS,
    dependencies=[ApiKeyDep],
)
async def generate_preview_images(
    body: GenerateIn, settings: SettingsDep, clients: ClientsDep, runner: RunnerDep
) -> JSONResponse:
    """Start generating one image per scene; answers at once (202) while the run goes on."""
    video_id = validation.video_id(body.videoId, "videoId")
    scenes = parse_scenes(body, settings.max_scenes) if body.scenes else await stored_scenes(clients, video_id)
    run, started = await runner.start(video_id, scenes)
    out = GenerateOut(
        videoId=video_id,
        status="queued" if run.queued else "generating_images",
        scenes=len(run.scenes),
        alreadyRunning=not started,
    )
    return JSONResponse(out.model_dump(), status_code=202, headers=NO_STORE)


@router.post(
    "/api/videos/{videoId}/scenes/{scene}/regenerate",
    status_code=202,
    response_model=GenerateOut,
    responses=ERRORS,
    dependencies=[ApiKeyDep],
)
async def regenerate_scene(
    videoId: str,
    clients: ClientsDep,
    runner: RunnerDep,
    scene: int = PathParam(description="The 1-based scene number", ge=1, le=100_000),
    body: RegenerateIn | None = None,
) -> JSONResponse:
    """Generate one scene again, even when it has a real image (an optional new prompt in the
    body). Its URL's version changes and the old object is replaced; progress never goes
    back. A video that is running answers 409."""
    video_id = validation.video_id(videoId, "videoId")
    scenes = await regenerated_scenes(clients, video_id, scene, body.prompt if body else None)
    run, started = await runner.start(video_id, scenes, regenerate=frozenset({scene}))
    out = GenerateOut(
        videoId=video_id,
        status="queued" if run.queued else "generating_images",
        scenes=len(run.scenes),
        alreadyRunning=not started,
    )
    return JSONResponse(out.model_dump(), status_code=202, headers=NO_STORE)


@router.get("/api/video-status", response_model=VideoStatusOut, responses=ERRORS)
async def video_status(
    settings: SettingsDep,
    clients: ClientsDep,
    runner: RunnerDep,
    last_known: LastKnownDep,
    videoId: str = Query(..., description="The video's id"),
) -> JSONResponse:
    """The video's status and progress. Never 502: a status outage answers degraded."""
    video_id = validation.video_id(videoId, "videoId")
    position = runner.position(video_id)
    if position is not None:  # waiting for its turn in this gateway: nothing to read yet
        return JSONResponse(queued_json(video_id, position), headers=NO_STORE)
    try:
        answer = await clients.get_video(video_id)
        if not answer.degraded:
            last_known.remember(answer)
    except BreakerOpen as exc:
        answer = last_known.degraded(video_id, str(exc))
    except ServiceDown as exc:
        answer = last_known.degraded(video_id, f"status service: {exc.code.name}")
    except ServiceRefused as exc:
        if exc.not_found or exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            return service_error_response(exc)
        answer = last_known.degraded(video_id, f"status service: {exc.code.name}")
    return JSONResponse(status_json(answer, settings.public_origin), headers=NO_STORE)


@router.get("/videos/{video_id}", response_class=HTMLResponse, responses=ERRORS)
async def video_view(video_id: str) -> HTMLResponse:
    """A page with the video's progress bar and images, refreshing until the video is done."""
    return HTMLResponse(video_page(validation.video_id(video_id, "videoId")), headers=NO_STORE)
