"""The HTTP app: what it builds at start (clients, pipeline, runner), its middleware, error
handlers and routes (gateway/routes/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

# Loaded now, not by the first event stream's answer (~70 ms of imports on a user's wait).
import anyio._backends._asyncio  # noqa: F401
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gateway import handlers
from gateway.answers import LastKnown
from gateway.clients import ServiceClients
from gateway.draining import Drain, RefuseStartsWhileDraining
from gateway.errors import BodyLimit
from gateway.events import VideoEvents
from gateway.queue import QueueRunner, queue_app, queue_pool
from gateway.routes import health, objects, videos
from gateway.runner import Runner
from gateway.runs import RunRegistry
from gateway.settings import GatewaySettings
from gateway.status_reader import StatusReader
from gateway.wiring import build_auth, build_healer, build_pipeline
from services.common.metrics import serve_metrics
from storyshort.status.v1 import status_pb2


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = ServiceClients.connect(settings)
        pipeline = build_pipeline(settings, clients)
        app.state.settings, app.state.clients, app.state.last_known = settings, clients, LastKnown()
        app.state.budget = pipeline.budget
        async with AsyncExitStack() as stack:
            runs: Runner
            if settings.runs == "queue":
                if not settings.database_url:
                    raise SystemExit("RUNS=queue needs DATABASE_URL (the PostgreSQL that holds the queue)")
                # Started, and serving reads, even while the queue's database is down: its
                # pool opens without waiting, and starts answer 503 until it answers.
                jobs = queue_app(settings.database_url)
                pool = queue_pool(settings.database_url)
                await pool.open(wait=False)
                stack.push_async_callback(pool.close)
                await stack.enter_async_context(jobs.open_async(pool))
                queue = QueueRunner(pipeline, jobs, settings.database_url, settings.queue_timeout)
                await queue.open()
                runs = queue
            else:
                runs = RunRegistry(
                    pipeline,
                    build_healer(settings, clients),
                    max_running=settings.max_running_videos,
                    max_waiting=settings.max_waiting_videos,
                    max_waiting_bytes=settings.max_waiting_bytes,
                    max_waiting_per_user=settings.max_waiting_per_user,
                )
            app.state.runs = runs
            reader = app.state.status = StatusReader(clients, runs, app.state.last_known, settings.public_origin)
            events = VideoEvents(
                reader.look,
                shape=reader.shape,
                poll_every=settings.events_poll_every,
                max_followers=settings.events_max_followers,
            )

            def written(video_id: str, video: status_pb2.Video) -> None:
                reader.written(video)
                events.changed(video_id, video)

            clients.on_write = written
            app.state.events = events
            try:
                yield
            finally:
                await events.close()
                await runs.drain(settings.shutdown_grace)
                await clients.close()

    auth = build_auth(settings)

    docs = settings.api_docs
    app = FastAPI(
        title="StoryShort preview images",
        version="1.0.0",
        description="Turns a story's scenes into stored images and tracks the video's progress.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.auth = auth
    app.state.drain = drain = Drain()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RefuseStartsWhileDraining, drain=drain)
    if settings.cors_origins:
        # Outermost, so error answers (413, 429, ...) carry the headers too and the page can read them.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_origins != ["*"],
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Prefer"],
            expose_headers=["Retry-After", "Preference-Applied", "Location"],
            max_age=600,
        )
    handlers.install(app)
    for router in (videos.router, objects.router, health.router):
        app.include_router(router)
    if settings.gateway_metrics_port:
        serve_metrics(settings.gateway_metrics_port, settings.http_host)
    else:
        app.include_router(health.metrics_router)
    return app
