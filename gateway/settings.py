"""The gateway's settings (and the queue worker's, which runs the same pipeline), read once
at start from the environment (names in the README)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.common.config import MIB, LongSeconds, ObjectLayoutSettings, Seconds


class GatewaySettings(ObjectLayoutSettings):
    http_host: str = Field("127.0.0.1", validation_alias="GATEWAY_HOST")
    http_port: int = Field(8080, validation_alias="GATEWAY_PORT")
    imagegen_addr: str = Field("127.0.0.1:50051", validation_alias="IMAGEGEN_ADDR")
    storage_addr: str = Field("127.0.0.1:50052", validation_alias="STORAGE_ADDR")
    status_addr: str = Field("127.0.0.1:50053", validation_alias="STATUS_ADDR")
    scene_concurrency: int = Field(3, validation_alias="SCENE_CONCURRENCY", ge=1, le=32)
    max_scenes: int = Field(100, validation_alias="MAX_SCENES", ge=1)
    image_gen_timeout: Seconds = Field(60.0, validation_alias="IMAGE_GEN_TIMEOUT", gt=0)
    image_size: str = Field("1024x1024", validation_alias="IMAGE_SIZE")
    # Per-hop deadlines (seconds) for storage Upload and status calls.
    upload_timeout: Seconds = Field(30.0, validation_alias="UPLOAD_TIMEOUT", gt=0)
    status_timeout: Seconds = Field(5.0, validation_alias="STATUS_TIMEOUT", gt=0)
    # How long the end of a run keeps trying to record what the status service missed (and
    # the final status) before the results go to the journal for the next run.
    status_flush_within: Seconds = Field(30.0, validation_alias="STATUS_FLUSH_WITHIN", gt=0)
    # Breakers on the hops to status, storage and imagegen: timeouts or UNAVAILABLE in a row
    # that open one, and seconds between health probes while it is open.
    hop_breaker_threshold: int = Field(1, validation_alias="HOP_BREAKER_THRESHOLD", ge=1)
    hop_breaker_probe_every: Seconds = Field(1.0, validation_alias="HOP_BREAKER_PROBE_EVERY", gt=0)
    # When set, POST /api/generate-preview-images needs "Authorization: Bearer <key>".
    api_key: SecretStr | None = Field(None, validation_alias="GATEWAY_API_KEY")
    # The secret that makes object paths unguessable (services/common/objects.py: ObjectKeys),
    # the same on every gateway and worker; unset, one is made and kept in DATA_DIR.
    object_key_secret: SecretStr | None = Field(None, validation_alias="OBJECT_KEY_SECRET", min_length=16)
    max_body_bytes: int = Field(4 * MIB, validation_alias="MAX_BODY_BYTES", ge=1024)
    # Where video runs execute: in this process (embedded default) or as jobs on the
    # procrastinate queue in DATABASE_URL, run by `python -m gateway.worker` replicas.
    runs: Literal["inprocess", "queue"] = Field("inprocess", validation_alias="RUNS")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    # A start's work on the queue's database (RUNS=queue); past it the start answers 503.
    queue_timeout: Seconds = Field(5.0, validation_alias="QUEUE_TIMEOUT", gt=0)
    worker_concurrency: int = Field(4, validation_alias="WORKER_CONCURRENCY", ge=1)
    # The worker's own Prometheus /metrics (its runs, scenes, spend and budget series); 0: off.
    worker_metrics_port: int = Field(9104, validation_alias="WORKER_METRICS_PORT", ge=0)
    # The gateway's own metrics on a port of their own (as the services have; a network
    # policy then lets only Prometheus reach them); 0: at /metrics of the HTTP port, where
    # with AUTH_REQUIRED they answer the operators' service token only.
    gateway_metrics_port: int = Field(0, validation_alias="GATEWAY_METRICS_PORT", ge=0)
    # The API's docs (/docs, /redoc) and its OpenAPI document (/openapi.json); off, they 404.
    api_docs: bool = Field(True, validation_alias="API_DOCS")
    # Seconds without a worker heartbeat after which its jobs are retried by another worker.
    worker_stalled_after: Seconds = Field(30.0, validation_alias="WORKER_STALLED_AFTER", ge=2)
    # Optional spend caps in USD (estimated from IMAGEGEN_PRICES_FILE); unset: no cap.
    budget_daily_usd: float | None = Field(None, validation_alias="BUDGET_DAILY_USD", ge=0, allow_inf_nan=False)
    budget_video_usd: float | None = Field(None, validation_alias="BUDGET_VIDEO_USD", ge=0, allow_inf_nan=False)
    # Admission (RUNS=inprocess): videos running at once in the gateway; more wait in order,
    # up to MAX_WAITING_VIDEOS and MAX_WAITING_BYTES of prompts, then a start is answered 429.
    max_running_videos: int = Field(4, validation_alias="MAX_RUNNING_VIDEOS", ge=1)
    max_waiting_videos: int = Field(1000, validation_alias="MAX_WAITING_VIDEOS", ge=0)
    max_waiting_bytes: int = Field(64 * MIB, validation_alias="MAX_WAITING_BYTES", ge=0)
    # One signed-in user's share of that line: more of their starts wait no more (0: no share).
    max_waiting_per_user: int = Field(10, validation_alias="MAX_WAITING_PER_USER", ge=0)
    # Healing: a video left with placeholders by provider trouble is resumed after HEAL_AFTER
    # seconds (doubling per try up to HEAL_MAX_WAIT), at most HEAL_MAX_TRIES times (0: off).
    heal_after: LongSeconds = Field(60.0, validation_alias="HEAL_AFTER", gt=0)
    heal_max_wait: LongSeconds = Field(1800.0, validation_alias="HEAL_MAX_WAIT", gt=0)
    heal_max_tries: int = Field(5, validation_alias="HEAL_MAX_TRIES", ge=0)
    # Event streams: seconds between status reads of a followed video (writes by this
    # gateway are pushed at once), between heartbeats, and the most streams open at once.
    events_poll_every: Seconds = Field(1.0, validation_alias="EVENTS_POLL_EVERY", gt=0)
    events_heartbeat: Seconds = Field(15.0, validation_alias="EVENTS_HEARTBEAT", gt=0)
    events_max_followers: int = Field(10_000, validation_alias="EVENTS_MAX_FOLLOWERS", ge=1)
    # Seconds between SIGTERM and closing the listener, answering /readyz and new starts 503
    # meanwhile, so a load balancer can stop routing here first (gateway/draining.py).
    shutdown_drain: Seconds = Field(0.0, validation_alias="SHUTDOWN_DRAIN", ge=0)
    # Longest a POST with `Prefer: wait=N` waits for the run to end (N is capped to this).
    prefer_wait_max: Seconds = Field(60.0, validation_alias="PREFER_WAIT_MAX", ge=0)
    # Signed-in users (Supabase Auth): with AUTH_REQUIRED every API route and the video page
    # need a user's access token (or GATEWAY_API_KEY, the operators' service token), and a
    # user reaches only their own videos. Tokens are checked against the project's JWKS
    # (default: SUPABASE_URL/auth/v1/.well-known/jwks.json) or the legacy HS256 secret.
    auth_required: bool = Field(False, validation_alias="AUTH_REQUIRED")
    auth_jwks_url: str | None = Field(None, validation_alias="AUTH_JWKS_URL")
    supabase_jwt_secret: SecretStr | None = Field(None, validation_alias="SUPABASE_JWT_SECRET")
    auth_issuer: str | None = Field(None, validation_alias="AUTH_ISSUER")
    auth_audience: str = Field("authenticated", validation_alias="AUTH_AUDIENCE", min_length=1)
    # Supabase anonymous sign-ins (tokens with `is_anonymous: true`) are refused (403): each
    # would get a fresh set of per-user limits. True lets them in.
    auth_allow_anonymous: bool = Field(False, validation_alias="AUTH_ALLOW_ANONYMOUS")
    # Per-user limits (signed-in users; 0: none), counted in the status store, and one user's
    # share of BUDGET_DAILY_USD (0-1; unset: none).
    user_videos_per_hour: int = Field(0, validation_alias="USER_VIDEOS_PER_HOUR", ge=0)
    user_scenes_per_day: int = Field(0, validation_alias="USER_SCENES_PER_DAY", ge=0)
    budget_user_share: float | None = Field(None, validation_alias="BUDGET_USER_SHARE", gt=0, le=1)

    @property
    def jwks_url(self) -> str | None:
        if self.auth_jwks_url:
            return self.auth_jwks_url
        return f"{self.supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json" if self.supabase_url else None

    @property
    def issuer(self) -> str | None:
        if self.auth_issuer:
            return self.auth_issuer
        return f"{self.supabase_url.rstrip('/')}/auth/v1" if self.supabase_url else None

    # Browser origins allowed to call the API (CORS), comma-separated, e.g.
    # "https://app.storyshort.example,http://localhost:3000"; "*": any origin, without
    # credentials. Empty: none (only same-origin pages, such as the video page).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="CORS_ORIGINS")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ValueError(f"{origin!r} is not an origin; write scheme://host[:port], e.g. https://app.example")
        if "*" in origins and len(origins) > 1:
            raise ValueError("'*' allows every origin; give it alone or list the origins")
        return origins
