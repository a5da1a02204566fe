"""Start a video, read its status, and its page."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from gateway.clients import ServiceClients
from gateway.deps import (
    BrowserReaderDep,
    BudgetDep,
    ClientsDep,
    EventsDep,
    ReaderDep,
    RunnerDep,
    SettingsDep,
    StatusDep,
    WriterDep,
)
from gateway.draining import until_cut
from gateway.errors import HTTPError
from gateway.page import video_page
from gateway.pushed import earlier_results, ended_within, prefer_wait, sse_stream
from gateway.routes import ERRORS, NO_STORE
from gateway.scenes import parse_scenes, regenerated_scenes, stored_scenes
from gateway.schemas import GenerateIn, GenerateOut, GenerateWaitedOut, RegenerateIn, VideoStatusOut
from gateway.status_reader import visible
from gateway.video_run import VideoRun
from gateway.vocabulary import GENERATING, QUEUED
from services.common import validation

router = APIRouter()


def started_answer(video_id: str, run: VideoRun, started: bool) -> GenerateOut:
    """What a start (or a regenerate) answers: the run it began or joined."""
    return GenerateOut(
        videoId=video_id,
        status=QUEUED if run.queued else GENERATING,
        scenes=len(run.scenes),
        alreadyRunning=not started,
    )


def status_answering(clients: ServiceClients) -> None:
    """A start needs the status service, which records it: while that hop's breaker is open
    because it gave no answer (and its health probe has not found it well since), the start
    is refused at once, 503 with Retry-After (BreakerOpen), not after STATUS_TIMEOUT each
    time. A queue worker's or a waiting video's start still waits for it, with its retries."""
    clients.breakers["status"].check_answering()


@router.post(
    "/api/generate-preview-images",
    status_code=202,
    response_model=GenerateOut,
    responses={
        **ERRORS,
        200: {"model": GenerateWaitedOut, "description": "With `Prefer: wait=N`: the run ended within N seconds"},
    },
)
async def generate_preview_images(
    body: GenerateIn,
    caller: WriterDep,
    budget: BudgetDep,
    settings: SettingsDep,
    clients: ClientsDep,
    status: StatusDep,
    runner: RunnerDep,
    events: EventsDep,
    prefer: str | None = Header(
        None,
        description="`wait=N` (RFC 7240): answer 200 with the per-scene results if the run ends within N "
        "seconds (capped by PREFER_WAIT_MAX), else 202 as usual",
    ),
) -> JSONResponse:
    """Start generating one image per scene; answers at once (202) while the run goes on."""
    video_id = validation.video_id(body.videoId, "videoId")
    wait = prefer_wait(prefer, settings.prefer_wait_max)
    if body.scenes:
        scenes = parse_scenes(body, settings.max_scenes)
        await status.check_owner(video_id, caller)
    else:
        scenes = await stored_scenes(clients, video_id, caller)
    await budget.check_owner_share(caller.user or "")
    status_answering(clients)  # the input checked first: bad input is a 400 whatever is down
    run, started = await runner.start(video_id, scenes, owner=caller.user or "")
    out = started_answer(video_id, run, started)
    if wait is None:
        return JSONResponse(out.model_dump(), status_code=202, headers=NO_STORE)
    applied = {**NO_STORE, "Preference-Applied": f"wait={wait:g}"}
    final = await ended_within(events, video_id, wait, caller)
    if final is None:
        return JSONResponse(out.model_dump(), status_code=202, headers=applied)
    return JSONResponse({**out.model_dump(), **earlier_results(final)}, status_code=200, headers=applied)


@router.post(
    "/api/videos/{videoId}/scenes/{scene}/regenerate",
    status_code=202,
    response_model=GenerateOut,
    responses=ERRORS,
)
async def regenerate_scene(
    videoId: str,
    caller: WriterDep,
    clients: ClientsDep,
    runner: RunnerDep,
    scene: int = PathParam(description="The 1-based scene number", ge=1, le=validation.SCENE_MAX),
    body: RegenerateIn | None = None,
) -> JSONResponse:
    """Generate one scene again, even when it has a real image (an optional new prompt in the
    body). Its URL's version changes and the old object is replaced; progress never goes
    back. A video that is running answers 409."""
    video_id = validation.video_id(videoId, "videoId")
    scenes = await regenerated_scenes(clients, video_id, scene, body.prompt if body else None, caller)
    status_answering(clients)
    run, started = await runner.start(video_id, scenes, regenerate=frozenset({scene}), owner=caller.user or "")
    return JSONResponse(started_answer(video_id, run, started).model_dump(), status_code=202, headers=NO_STORE)


@router.get("/api/video-status", response_model=VideoStatusOut, responses=ERRORS)
async def video_status(
    caller: ReaderDep,
    status: StatusDep,
    videoId: str = Query(..., description="The video's id"),
) -> Response:
    """The video's status and progress. Never 502: a status outage answers degraded (a
    signed-in user gets 503 when whose video it is cannot be known then)."""
    video_id = validation.video_id(videoId, "videoId")
    # Held to the response model on its way out, serialized by it (pydantic's own JSON
    # encoder: cheaper than FastAPI validating and encoding it again).
    answer = VideoStatusOut.model_validate(await status.read(video_id, caller))
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json", headers=NO_STORE)


@router.get(
    "/api/videos/{videoId}/events",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "description": "Server-Sent Events: `status` events (data: the status answer) whenever it changes, "
            "comment heartbeats, and an `end` event when the run ends",
            "content": {"text/event-stream": {}},
        },
    },
)
async def video_events(
    request: Request,
    videoId: str,
    caller: BrowserReaderDep,
    settings: SettingsDep,
    status: StatusDep,
    events: EventsDep,
) -> StreamingResponse:
    """The video's status answer pushed whenever it changes, until the run ends (then an
    `end` event; an EventSource should close on it, or it reconnects and gets the final
    answer again). Works across gateway replicas and with RUNS=queue."""
    video_id = validation.video_id(videoId, "videoId")
    if events.full:
        raise HTTPError(
            503,
            "UNAVAILABLE",
            "this gateway follows as many streams as it may; poll /api/video-status",
            {"Retry-After": "5"},
        )
    first = await status.look(video_id)
    visible(first, video_id, caller)  # 404 / 503 before the stream opens
    # A heartbeat no later than the token's expiry: the stream ends then, saying why.
    left = caller.seconds_left()
    heartbeat = settings.events_heartbeat if left is None else max(min(settings.events_heartbeat, left), 0.05)
    # Cut (without `end`) when the gateway shuts down, so followers reconnect elsewhere.
    cut = request.app.state.drain.cut_for_new_stream()
    return StreamingResponse(
        sse_stream(video_id, until_cut(events.follow(video_id, first, heartbeat), cut), caller),
        media_type="text/event-stream",
        headers={**NO_STORE, "X-Accel-Buffering": "no"},
    )


@router.get("/videos/{video_id}", response_class=HTMLResponse, responses=ERRORS)
async def video_view(
    video_id: str,
    caller: BrowserReaderDep,
    settings: SettingsDep,
    status: StatusDep,
) -> HTMLResponse:
    """A page with the video's progress bar and images, following the video's event stream
    until it is done. With users on, open it with `?access_token=`: someone else's video is
    a 404, as on every route."""
    video_id = validation.video_id(video_id, "videoId")
    if caller.user:
        await status.read(video_id, caller)
    text, headers = video_page(video_id, settings.public_origin, await status.prompts(video_id, caller))
    return HTMLResponse(text, headers={**NO_STORE, **headers})
