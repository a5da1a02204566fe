"""HTTP routes: start a video, read its status, serve local images, health and metrics."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.answers import LastKnown, queued_json, status_json
from gateway.breakers import BreakerOpen
from gateway.clients import ServiceClients
from gateway.errors import CODE_FOR_HTTP, BodyLimit, HTTPError, error_response, grpc_error_response
from gateway.page import video_page
from gateway.queue import QueueRunner, ensure_schema, queue_app
from gateway.runs import RunRegistry
from gateway.scenes import parse_scenes, stored_scenes
from gateway.schemas import ErrorOut, GenerateIn, GenerateOut, VideoStatusOut
from gateway.settings import GatewaySettings
from gateway.wiring import build_healer, build_pipeline
from services.common import objects, validation
from services.common.errors import InvalidArgument
from services.common.objects import PUBLIC_PREFIX, resolve_inside

log = logging.getLogger("gateway")
NO_STORE = {"Cache-Control": "no-store"}
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
# Errors are JSON on every route, the HTML page's included.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "content": {"application/json": {}}}
    for code in (400, 401, 404, 409, 413, 429, 500, 503, 504)
}


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
        objects.object_path(object_path)
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
