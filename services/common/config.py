"""Settings read once at start from the environment (names in the README).

(Over 300 lines: every process's settings, one class each, so a name is defined once and
the README test can list them all from one place.)"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from services.common.logs import register_secret

S = TypeVar("S", bound=BaseSettings)
MIB = 1024 * 1024
# gRPC's default 4 MiB receive limit is below the 5 MiB file limit: every server and
# channel uses this instead (image plus protobuf framing, with room to spare).
GRPC_MAX_MESSAGE_BYTES = 8 * MIB
MAX_IMAGE_BYTES = 5 * MIB


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration(bare_max: float) -> Callable[[object], object]:
    """A duration in seconds, with an optional unit (`60s`, `60000ms`, `2m`, `1h`). A bare
    number above ``bare_max`` cannot have been meant as seconds (the earlier settings were
    milliseconds: `IMAGE_GEN_TIMEOUT=60000`) and is refused, naming the unit."""

    def parse(value: object) -> object:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            text, number, unit = str(value), float(value), None
        else:
            match = _DURATION.match(str(value))
            if match is None:
                raise ValueError(
                    f"{value!r} is not a duration; write seconds, or a number with a unit: 60s, 60000ms, 2m"
                )
            text, number, unit = str(value).strip(), float(match.group(1)), match.group(2)
        if unit is None:
            if number > bare_max:
                raise ValueError(
                    f"{text} seconds is more than {bare_max:g} s, too long to be meant; durations are in seconds: "
                    f"write {text}ms if milliseconds were meant, or {text}s to mean seconds"
                )
            return number
        return number * _UNIT_SECONDS[unit.lower()]

    return parse


# A time setting in seconds; a bare number above an hour (a day for the long ones) is refused.
Seconds = Annotated[float, BeforeValidator(_duration(3600))]
LongSeconds = Annotated[float, BeforeValidator(_duration(7 * 86400))]


def load_settings(kind: type[S]) -> S:
    """The settings from the environment, or exit naming every mistake, one per line (the
    variable and what is wrong; never the value, which may be a secret)."""
    templated = sorted(name for name in setting_names(kind) if TEMPLATE_VALUE in os.environ.get(name, ""))
    if templated:
        raise SystemExit(
            f"{len(templated)} setting(s) still hold the template's {TEMPLATE_VALUE}: {', '.join(templated)}; "
            "put the real values in the secret before deploying"
        )
    try:
        return kind()
    except ValidationError as exc:
        raise SystemExit(settings_errors(exc)) from None
    except SettingsError as exc:  # a JSON setting that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        field = kind.model_fields.get(found.group(1)) if found else None
        alias = field.validation_alias if field is not None else None
        name = alias if isinstance(alias, str) else (found.group(1) if found else "a setting")
        raise SystemExit(f"1 setting(s) not valid:\n  {name}: not valid JSON") from None


# What deploy/k8s's Secret template holds until someone fills it in: never started with.
TEMPLATE_VALUE = "REPLACE_ME"


def settings_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {name}: {error['msg']}")
    return f"{len(lines)} setting(s) not valid:\n" + "\n".join(lines)


def url_without_password(url: str) -> str:
    """A URL fit to print: scheme, host, port and path; never the user or password."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class CommonSettings(BaseSettings):
    # An empty variable means "not set" (compose files pass ${VAR:-} through).
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, env_ignore_empty=True)

    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    # gRPC servers listen on loopback unless told otherwise.
    grpc_host: str = Field("127.0.0.1", validation_alias="GRPC_HOST")
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace: Seconds = Field(10.0, validation_alias="SHUTDOWN_GRACE", gt=0)
    data_dir: Path = Field(Path("data"), validation_alias="DATA_DIR")
    # The services take calls only with this token ('authorization: Bearer <token>'), which
    # the gateways and workers send; unset, they take any call (make run: loopback only).
    # Kubernetes sets it from the storyshort-keys Secret.
    grpc_service_token: SecretStr | None = Field(None, validation_alias="GRPC_SERVICE_TOKEN", min_length=16)
    # TLS for gRPC: a server with a cert and key serves TLS only; clients trust this CA.
    grpc_tls_cert: Path | None = Field(None, validation_alias="GRPC_TLS_CERT")
    grpc_tls_key: Path | None = Field(None, validation_alias="GRPC_TLS_KEY")
    grpc_tls_ca: Path | None = Field(None, validation_alias="GRPC_TLS_CA")

    def service_token(self) -> str | None:
        """GRPC_SERVICE_TOKEN (kept out of every log line from here on), or None."""
        if self.grpc_service_token is None:
            return None
        token = self.grpc_service_token.get_secret_value()
        register_secret(token)
        return token

    def server_credentials(self) -> tuple[bytes, bytes] | None:
        """(private key, certificate chain) when TLS is configured."""
        if self.grpc_tls_cert is None and self.grpc_tls_key is None:
            return None
        if self.grpc_tls_cert is None or self.grpc_tls_key is None:
            raise SystemExit("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together")
        return self.grpc_tls_key.read_bytes(), self.grpc_tls_cert.read_bytes()


class ProviderLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(None, ge=1)
    timeout: Seconds | None = Field(None, gt=0)


class ImagegenSettings(CommonSettings):
    port: int = Field(50051, validation_alias="IMAGEGEN_PORT")
    metrics_port: int = Field(9101, validation_alias="IMAGEGEN_METRICS_PORT")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str = Field("https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    chain: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gpt-image-2.5-sunburst", "gpt-image-2"],
        validation_alias="IMAGEGEN_CHAIN",
    )
    # A JSON file of chain entries, each a vendor with its own credentials (README: Provider
    # chain); when set it replaces IMAGEGEN_CHAIN, OPENAI_* and IMAGEGEN_PROVIDER_LIMITS.
    chain_file: Path | None = Field(None, validation_alias="IMAGEGEN_CHAIN_FILE")
    # Seconds for the whole chain of one Generate call.
    image_gen_timeout: Seconds = Field(60.0, validation_alias="IMAGE_GEN_TIMEOUT", gt=0)
    placeholder_path: Path | None = Field(None, validation_alias="PLACEHOLDER_PATH")
    # Longest one provider attempt may take; unset: by the quality in use (chain_config.py).
    # An attempt also never takes more than a fair share of the time left before the deadline.
    attempt_timeout: Seconds | None = Field(None, validation_alias="IMAGEGEN_ATTEMPT_TIMEOUT", gt=0)
    placeholder_reserve: Seconds = Field(0.5, validation_alias="IMAGEGEN_PLACEHOLDER_RESERVE", ge=0)
    # An attempt with less time than this is not started.
    min_attempt: Seconds = Field(0.25, validation_alias="IMAGEGEN_MIN_ATTEMPT", gt=0)
    # Tries of the last real model again after a transient failure, when the deadline allows.
    same_provider_retries: int = Field(1, validation_alias="IMAGEGEN_SAME_PROVIDER_RETRIES", ge=0, le=3)
    # Breakers: K timeouts or transient failures in a row open one; cooldowns in seconds.
    breaker_threshold: int = Field(3, validation_alias="IMAGEGEN_BREAKER_THRESHOLD", ge=1)
    breaker_cooldown: LongSeconds = Field(300.0, validation_alias="IMAGEGEN_BREAKER_COOLDOWN", gt=0)
    breaker_transient_cooldown: LongSeconds = Field(30.0, validation_alias="IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN", gt=0)
    breaker_max_cooldown: LongSeconds = Field(1800.0, validation_alias="IMAGEGEN_BREAKER_MAX_COOLDOWN", gt=0)
    # Requests the chain stopped waiting for that may finish in the background (their image
    # is kept for the scene); beyond this many they are cancelled.
    late_max: int = Field(16, validation_alias="IMAGEGEN_LATE_MAX", ge=0)
    # Concurrent requests per provider, shared by every caller (rate limits are per account).
    concurrency: int = Field(4, validation_alias="IMAGEGEN_CONCURRENCY", ge=1)
    # Per-model overrides as JSON: {"gpt-image-2": {"concurrency": 2, "timeout": 20}}
    provider_limits: dict[str, ProviderLimits] = Field(
        default_factory=dict, validation_alias="IMAGEGEN_PROVIDER_LIMITS"
    )
    # Preview images are small and wanted fast: GPT image models at quality low by default.
    quality: Literal["low", "medium", "high", "auto"] = Field("low", validation_alias="IMAGEGEN_QUALITY")
    output_format: Literal["png", "jpeg", "webp"] = Field("png", validation_alias="IMAGEGEN_OUTPUT_FORMAT")
    # Partial images a model that streams sends before its final (GenerateStream passes them
    # on as previews); each is billed (about 100 output image tokens). 0: the final alone.
    partial_images: int = Field(1, validation_alias="IMAGEGEN_PARTIAL_IMAGES", ge=0, le=3)
    model_check: bool = Field(True, validation_alias="IMAGEGEN_MODEL_CHECK")
    # Images kept to answer a retried scene without paying again (MiB; 0: off) and for how long (s).
    replay_cache_mib: int = Field(256, validation_alias="IMAGEGEN_REPLAY_CACHE_MIB", ge=0)
    replay_ttl: LongSeconds = Field(3600.0, validation_alias="IMAGEGEN_REPLAY_TTL", gt=0)
    # JSON price table per model (see config/prices.example.json); none: spend is unknown.
    prices_file: Path | None = Field(None, validation_alias="IMAGEGEN_PRICES_FILE")
    # Replicas' shared state (README: Scaling out): a redis:// or rediss:// URL; unset, each
    # replica keeps its own limits, breakers and paid images.
    shared_state: SecretStr | None = Field(None, validation_alias="IMAGEGEN_SHARED_STATE")
    shared_prefix: str = Field("storyshort:imagegen", validation_alias="IMAGEGEN_SHARED_PREFIX", min_length=1)
    # Longest a request waits for one Redis call before it goes on without its answer (a
    # late answer alone never marks the shared state down).
    shared_timeout: Seconds = Field(0.25, validation_alias="IMAGEGEN_SHARED_TIMEOUT", gt=0)
    # A ping outside the request path that gets no answer within this long, twice in a row,
    # marks the shared state down (a refused or reset connection does at once).
    shared_ping_timeout: Seconds = Field(1.0, validation_alias="IMAGEGEN_SHARED_PING_TIMEOUT", gt=0)
    # A slot held by a replica that died is free again after at most this long.
    shared_lease: Seconds = Field(15.0, validation_alias="IMAGEGEN_SHARED_LEASE", gt=0)
    # While Redis is unreachable each replica takes its part of every shared limit (split
    # among the replicas alive when it last saw Redis); one that never reached Redis takes
    # this share of it instead.
    shared_local_share: float = Field(0.5, validation_alias="IMAGEGEN_SHARED_LOCAL_SHARE", gt=0, le=1)
    # Bytes of paid images kept in Redis for every replica's retries (MiB).
    shared_replay_mib: int = Field(512, validation_alias="IMAGEGEN_SHARED_REPLAY_MIB", ge=1)

    @field_validator("shared_state")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (for example redis://redis:6379/0)")
        return value

    @field_validator("chain", mode="before")
    @classmethod
    def _split_chain(cls, value: object) -> object:
        if isinstance(value, str):
            names = [n.strip() for n in value.split(",") if n.strip()]
            return [n for n in names if n != "placeholder"]
        return value


class ObjectLayoutSettings(CommonSettings):
    """Where objects live and how their public URLs look (storage and gateway share it)."""

    bucket: str = Field("renders-images", validation_alias="STORAGE_BUCKET")
    # Where the local backend keeps objects; the gateway serves them from here.
    local_dir: Path | None = Field(None, validation_alias="STORAGE_LOCAL_DIR")
    # Base of public URLs for the local backend (the gateway's address).
    public_base_url: str = Field("http://127.0.0.1:8080", validation_alias="PUBLIC_BASE_URL")
    backend: Literal["local", "supabase"] = Field("local", validation_alias="STORAGE_BACKEND")
    supabase_url: str | None = Field(None, validation_alias=AliasChoices("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL"))

    @property
    def public_origin(self) -> str:
        """Where public image URLs point now: the gateway (local backend) or Supabase."""
        if self.backend == "supabase" and self.supabase_url:
            return self.supabase_url.rstrip("/")
        return self.public_base_url.rstrip("/")

    @property
    def storage_root(self) -> Path:
        return self.local_dir or self.data_dir / "storage"


class StorageSettings(ObjectLayoutSettings):
    port: int = Field(50052, validation_alias="STORAGE_PORT")
    metrics_port: int = Field(9102, validation_alias="STORAGE_METRICS_PORT")
    supabase_service_role_key: SecretStr | None = Field(None, validation_alias="SUPABASE_SERVICE_ROLE_KEY")


class StatusSettings(CommonSettings):
    port: int = Field(50053, validation_alias="STATUS_PORT")
    metrics_port: int = Field(9103, validation_alias="STATUS_METRICS_PORT")
    # One of the stores in services/status/stores/registry.py.
    store: str = Field("sqlite", validation_alias="STATUS_STORE")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    sqlite_path: Path | None = Field(None, validation_alias="STATUS_SQLITE_PATH")
    # Seconds without an update before a generating video counts as stalled.
    stall_after: LongSeconds = Field(600.0, validation_alias="STATUS_STALL_AFTER", gt=0)
    # Seconds one store call may take before it counts as failed.
    attempt_timeout: Seconds = Field(5.0, validation_alias="STATUS_ATTEMPT_TIMEOUT", gt=0)
    # The frontend's table and columns in an existing StoryShort database.
    videos_table: str = Field("videos", validation_alias="STATUS_VIDEOS_TABLE", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    id_column: str = Field("id", validation_alias="STATUS_ID_COLUMN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    status_column: str = Field("status", validation_alias="STATUS_STATUS_COLUMN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    progress_column: str = Field(
        "image_upload_progress", validation_alias="STATUS_PROGRESS_COLUMN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    # The column naming the user a video belongs to, where the table has one (else ours).
    owner_column: str = Field("user_id", validation_alias="STATUS_OWNER_COLUMN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The values written to that status column (the frontend's vocabulary). Any other value
    # there (NULL, `processing`, `rendering`, ...) counts as "not generating".
    status_generating: str = Field("generating_images", validation_alias="VIDEO_STATUS_GENERATING", min_length=1)
    status_done: str = Field("assets_generated", validation_alias="VIDEO_STATUS_DONE", min_length=1)
    status_failed: str = Field("failed", validation_alias="VIDEO_STATUS_FAILED", min_length=1)
    supabase_url: str | None = Field(None, validation_alias=AliasChoices("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL"))
    supabase_service_role_key: SecretStr | None = Field(None, validation_alias="SUPABASE_SERVICE_ROLE_KEY")

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        from services.status.stores.registry import known  # names only; no store is imported

        return known(value)

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or self.data_dir / "status.sqlite3"


def setting_names(kind: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (each of a field's alias choices)."""
    names: set[str] = set()
    for field in kind.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        elif alias is not None:
            names.add(str(alias))
    return names
