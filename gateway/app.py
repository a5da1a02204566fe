"""HTTP routes: start a video, read its status, serve local images, health and metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import metrics
from gateway.breakers import BreakerOpen
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import CODE_FOR_HTTP, BodyLimit, HTTPError, error_response, grpc_error_response
from gateway.healing import Healer
from gateway.page import video_page
from gateway.pipeline import Pipeline, Scene
from gateway.queue import QueueRunner, ensure_schema, queue_app
from gateway.runs import RunRegistry
from gateway.schemas import ErrorOut, GenerateIn, GenerateOut, VideoStatusOut
from gateway.spool import ImageSpool
from services.common import validation
from services.common.config import GatewaySettings
from services.common.errors import InvalidArgument
from services.storage import paths
from services.storage.backends.local import PUBLIC_PREFIX, resolve_inside
from storyshort.status.v1 import status_pb2

log = logging.getLogger("gateway")
NO_STORE = {"Cache-Control": "no-store"}
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
# Errors are JSON on every route, the HTML page's included.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "content": {"application/json": {}}}
    for code in (400, 401, 404, 409, 413, 429, 500, 503, 504)
}


def parse_scenes(body: GenerateIn, max_scenes: int) -> list[Scene]:
    if not body.scenes:
        raise InvalidArgument("scenes is empty; give at least one scene with a prompt")
    if len(body.scenes) > max_scenes:
        raise InvalidArgument(f"{len(body.scenes)} scenes given; at most {max_scenes} are allowed per video")
    scenes: list[Scene] = []
    for position, scene in enumerate(body.scenes):
        number = position + 1 if scene.index is None else scene.index + 1
        if number < 1:
            raise InvalidArgument(f"scene {position}: index must be 0 or more; got {scene.index}")
        try:
            scenes.append(Scene(number, validation.prompt(scene.prompt)))
        except InvalidArgument as exc:
            raise InvalidArgument(f"scene {number}: {exc}") from exc
    numbers = [s.number for s in scenes]
    if len(set(numbers)) != len(numbers):
        raise InvalidArgument("two scenes have the same index; each index may appear once")
    return scenes


def current_url(stored: str, origin: str) -> str:
    """A stored public URL on today's address: its object location (bucket, path and
    version) kept, its origin replaced, so moving the gateway breaks no earlier link."""
    at = stored.find(PUBLIC_PREFIX + "/")
    return origin + stored[at:] if at > 0 else stored


async def stored_scenes(clients: ServiceClients, video_id: str) -> list[Scene]:
    """A resume without scenes: the prompts the video's latest run was started with."""
    try:
        answer = await clients.get_video(video_id)
    except BreakerOpen as exc:
        raise HTTPError(
            503, "UNAVAILABLE", "the stored prompts cannot be read now; try again, or give the scenes"
        ) from exc
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise InvalidArgument(
                f"scenes is empty and there is no video {video_id!r} to resume; give its scenes"
            ) from exc
        raise HTTPError(
            503, "UNAVAILABLE", "the stored prompts cannot be read now; try again, or give the scenes"
        ) from exc
    if answer.degraded:
        raise HTTPError(503, "UNAVAILABLE", "the stored prompts cannot be read now; try again, or give the scenes")
    if not answer.video.prompts:
        raise InvalidArgument(f"scenes is empty and video {video_id!r} has no stored prompts; give its scenes")
    return [Scene(p.scene, p.prompt) for p in answer.video.prompts]


def queued_json(video_id: str, position: int) -> dict[str, Any]:
    """The status answer of a video waiting for its turn to run."""
    return {
        "videoId": video_id,
        "status": "queued",
        "progress": 0,
        "degraded": False,
        "images": [],
        "queuePosition": position,
    }


def status_json(answer: status_pb2.GetVideoResponse, origin: str) -> dict[str, Any]:
    """The answer of GET /api/video-status, shaped as VideoStatusOut (the schema in the
    OpenAPI document, which the fuzz test holds every answer to). Built as a plain dict:
    validating a model on every poll cost more than the rest of the gateway's work.
    Image URLs are built on ``origin``, where public images are served now."""
    video = answer.video
    s = video.summary
    return {
        "videoId": video.video_id,
        "status": video.status,
        "progress": video.progress,
        "degraded": answer.degraded,
        "images": [
            {
                "scene": sc.scene,
                "url": current_url(sc.url, origin),
                "placeholder": sc.placeholder,
                "provider": sc.provider,
                "reason": sc.error if sc.placeholder else "",
                "costUsd": sc.cost_usd if sc.cost_known else None,
            }
            for sc in video.scenes
            if sc.state == "stored"
        ],
        "failedScenes": [{"scene": sc.scene, "error": sc.error} for sc in video.scenes if sc.state == "failed"],
        "sceneCount": video.scene_count,
        "error": video.error,
        "stalled": answer.stalled,
        "ageMs": answer.age_ms,
        "degradedReason": answer.degraded_reason,
        "spendUsd": round(sum(sc.cost_usd for sc in video.scenes), 6)
        if all(sc.cost_known for sc in video.scenes)
        else None,
        "updatedAtMs": video.updated_at_ms,
        "summary": {
            "generated": s.generated,
            "placeholders": s.placeholders,
            "failed": s.failed,
            "hardProviderFailures": s.hard_provider_failures,
            "providerAttempts": s.provider_attempts,
            "elapsedMs": s.elapsed_ms,
            "spendUsd": round(s.spend_usd, 6) if not s.unpriced_images else None,
            "unpricedImages": s.unpriced_images,
        },
    }


def build_healer(settings: GatewaySettings, clients: ServiceClients) -> Healer:
    return Healer(
        clients, first_wait=settings.heal_after, max_wait=settings.heal_max_wait, max_tries=settings.heal_max_tries
    )


def build_pipeline(settings: GatewaySettings, clients: ServiceClients) -> Pipeline:
    """The scene pipeline, as the gateway (in-process runs) and the queue worker use it."""
    budget = BudgetGuard(clients, settings.budget_daily_usd, settings.budget_video_usd)
    spool = ImageSpool(settings.data_dir / "spool")
    return Pipeline(clients, settings.scene_concurrency, settings.image_size, spool, budget)


class LastKnown:
    """The gateway's own memory of status answers, for when the status service is down."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[status_pb2.GetVideoResponse, float]] = OrderedDict()
        self._size = size

    def remember(self, answer: status_pb2.GetVideoResponse) -> None:
        self._items[answer.video.video_id] = (answer, time.monotonic())
        self._items.move_to_end(answer.video.video_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def degraded(self, video_id: str, reason: str) -> status_pb2.GetVideoResponse:
        known = self._items.get(video_id)
        if known is None:
            metrics.STATUS_DEGRADED.labels("unknown").inc()
            return status_pb2.GetVideoResponse(
                video=status_pb2.Video(video_id=video_id, status="processing"), degraded=True, degraded_reason=reason
            )
        answer, seen = known
        metrics.STATUS_DEGRADED.labels("last_known").inc()
        return status_pb2.GetVideoResponse(
            video=answer.video,
            degraded=True,
            degraded_reason=reason,
            age_ms=answer.age_ms + int((time.monotonic() - seen) * 1000),
        )


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = ServiceClients.connect(settings)
        app.state.clients = clients
        pipeline = build_pipeline(settings, clients)
        app.state.last_known = LastKnown()
        async with AsyncExitStack() as stack:
            if settings.runs == "queue":
                if not settings.database_url:
                    raise SystemExit("RUNS=queue needs DATABASE_URL (the PostgreSQL that holds the queue)")
                jobs = queue_app(settings.database_url)
                await stack.enter_async_context(jobs.open_async())
                await ensure_schema(jobs)
                app.state.runs = QueueRunner(pipeline, jobs, settings.database_url)
                await app.state.runs.open()
            else:
                app.state.runs = RunRegistry(
                    pipeline,
                    build_healer(settings, clients),
                    max_running=settings.max_running_videos,
                    max_waiting=settings.max_waiting_videos,
                    max_waiting_bytes=settings.max_waiting_bytes,
                )
            try:
                yield
            finally:
                await app.state.runs.drain(settings.shutdown_grace)
                await clients.close()

    app = FastAPI(
        title="StoryShort preview images",
        version="1.0.0",
        description="Turns a story's scenes into stored images and tracks the video's progress.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    api_key = settings.api_key.get_secret_value().encode() if settings.api_key else None

    def require_key(request: Request) -> None:
        """Constant-time check of the bearer token for the write endpoint (GATEWAY_API_KEY)."""
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key):
            raise HTTPError(401, "UNAUTHENTICATED", "send the gateway's API key as 'Authorization: Bearer <key>'")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(400, "INVALID_ARGUMENT", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = CODE_FOR_HTTP.get(exc.status_code, "UNKNOWN" if exc.status_code < 500 else "INTERNAL")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(InvalidArgument)
    async def invalid(_request: Request, exc: InvalidArgument) -> JSONResponse:
        return error_response(400, "INVALID_ARGUMENT", str(exc))

    @app.exception_handler(HTTPError)
    async def http_error(_request: Request, exc: HTTPError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def rpc_error(_request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return grpc_error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL", "internal error; see the gateway logs")

    @app.post("/api/generate-preview-images", status_code=202, response_model=GenerateOut, responses=ERRORS)
    async def generate_preview_images(body: GenerateIn, request: Request) -> JSONResponse:
        """Start generating one image per scene; answers at once (202) while the run goes on."""
        require_key(request)
        video_id = validation.video_id(body.videoId, "videoId")
        if body.scenes:
            scenes = parse_scenes(body, settings.max_scenes)
        else:
            scenes = await stored_scenes(request.app.state.clients, video_id)
        run, started = await request.app.state.runs.start(video_id, scenes)
        out = GenerateOut(
            videoId=video_id,
            status="queued" if run.queued else "generating_images",
            scenes=len(run.scenes),
            alreadyRunning=not started,
        )
        return JSONResponse(out.model_dump(), status_code=202, headers=NO_STORE)

    @app.get("/api/video-status", response_model=VideoStatusOut, responses=ERRORS)
    async def video_status(request: Request, videoId: str = Query(..., description="The video's id")) -> JSONResponse:
        """The video's status and progress. Never 502: a status outage answers degraded."""
        video_id = validation.video_id(videoId, "videoId")
        last_known: LastKnown = request.app.state.last_known
        position = request.app.state.runs.position(video_id)
        if position is not None:  # waiting for its turn in this gateway: nothing to read yet
            return JSONResponse(queued_json(video_id, position), headers=NO_STORE)
        try:
            answer = await request.app.state.clients.get_video(video_id)
            if not answer.degraded:
                last_known.remember(answer)
        except BreakerOpen as exc:
            answer = last_known.degraded(video_id, str(exc))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return grpc_error_response(exc)
            answer = last_known.degraded(video_id, f"status service: {exc.code().name}")
        return JSONResponse(status_json(answer, settings.public_origin), headers=NO_STORE)

    @app.get(PUBLIC_PREFIX + "/{bucket}/{object_path:path}", responses=ERRORS, include_in_schema=True)
    async def public_object(bucket: str, object_path: str) -> Response:
        """Images stored by the local backend, at Supabase's public URL layout."""
        if bucket != settings.bucket:
            raise HTTPError(404, "NOT_FOUND", f"no bucket {bucket!r}")
        paths.object_path(object_path)
        target = resolve_inside(settings.storage_root, bucket, object_path)
        media = MEDIA_TYPES.get(target.suffix.lstrip(".").lower())
        if media is None or not target.is_file():
            raise HTTPError(404, "NOT_FOUND", f"no object {object_path!r}")
        return FileResponse(target, media_type=media, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/videos/{video_id}", response_class=HTMLResponse, responses=ERRORS)
    async def video_view(video_id: str) -> HTMLResponse:
        """A page with the video's progress bar and images, refreshing until the video is done."""
        return HTMLResponse(video_page(validation.video_id(video_id, "videoId")), headers=NO_STORE)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The gateway process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "a service is not SERVING"}})
    async def readyz(request: Request) -> JSONResponse:
        """Ready when imagegen, storage and status all answer SERVING."""
        clients: ServiceClients = request.app.state.clients
        services = await clients.health()
        ready = all(v == "SERVING" for v in services.values())
        body = {"ready": ready, "services": services, "breakers": clients.breaker_states()}
        return JSONResponse(body, status_code=200 if ready else 503, headers=NO_STORE)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
