"""What the HTTP app and the queue worker both build from the settings: the scene pipeline
and the healer."""

from __future__ import annotations

from gateway.auth import Authenticator, SigningKeys, TokenVerifier
from gateway.budget import BudgetGuard
from gateway.clients import IMAGEGEN_MARGIN, ServiceClients
from gateway.healing import Healer
from gateway.pipeline import REENCODE_TRIES, Pipeline
from gateway.settings import GatewaySettings
from gateway.spool import ImageSpool
from services.common.logs import register_secret
from services.common.objects import ObjectKeys
from storyshort.status.v1 import status_pb2


def build_healer(settings: GatewaySettings, clients: ServiceClients) -> Healer:
    return Healer(
        clients, first_wait=settings.heal_after, max_wait=settings.heal_max_wait, max_tries=settings.heal_max_tries
    )


def hold_seconds(settings: GatewaySettings) -> float:
    """How long a spend hold outlives its scene at most: the generate call's deadline, every
    upload try (twice over: a scene may wait for a storing slot as long as one takes) and the
    end-of-run report writes, with a minute to spare."""
    generate = 2 * settings.image_gen_timeout + IMAGEGEN_MARGIN
    upload = 2 * (REENCODE_TRIES + 1) * settings.upload_timeout
    return generate + upload + settings.status_flush_within + 60.0


def object_keys(settings: GatewaySettings) -> ObjectKeys:
    """The unguessable part of object paths, from OBJECT_KEY_SECRET or kept in DATA_DIR."""
    if settings.object_key_secret is not None:
        secret = settings.object_key_secret.get_secret_value()
        register_secret(secret)
        return ObjectKeys(secret.encode())
    return ObjectKeys.kept_in(settings.data_dir / "object-key")


def build_pipeline(settings: GatewaySettings, clients: ServiceClients) -> Pipeline:
    """The scene pipeline, as the gateway (in-process runs) and the queue worker use it."""
    budget = BudgetGuard(
        clients,
        settings.budget_daily_usd,
        settings.budget_video_usd,
        settings.budget_user_share,
        hold_seconds=hold_seconds(settings),
    )
    spool = ImageSpool(settings.data_dir / "spool")
    limits = status_pb2.UserLimits(
        videos_per_hour=settings.user_videos_per_hour, scenes_per_day=settings.user_scenes_per_day
    )
    return Pipeline(
        clients,
        settings.scene_concurrency,
        settings.image_size,
        spool,
        budget,
        object_keys(settings),
        limits,
        settings.status_flush_within,
    )


def build_auth(settings: GatewaySettings) -> Authenticator:
    """Who may call: the service token (GATEWAY_API_KEY) always; signed-in users with
    AUTH_REQUIRED, their tokens checked against the project's JWKS or the legacy secret."""
    service = settings.api_key.get_secret_value() if settings.api_key else None
    if service:
        register_secret(service)
    if not settings.auth_required:
        return Authenticator(service, None, required=False)
    if not settings.issuer:
        raise SystemExit("AUTH_REQUIRED needs AUTH_ISSUER or SUPABASE_URL (the issuer is <SUPABASE_URL>/auth/v1)")
    secret = settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else None
    if not settings.jwks_url and not secret:
        raise SystemExit("AUTH_REQUIRED needs AUTH_JWKS_URL (or SUPABASE_URL) or SUPABASE_JWT_SECRET to check tokens")
    if secret:
        register_secret(secret)
    verifier = TokenVerifier(
        issuer=settings.issuer,
        audience=settings.auth_audience,
        keys=SigningKeys(settings.jwks_url) if settings.jwks_url else None,
        secret=secret,
        allow_anonymous=settings.auth_allow_anonymous,
    )
    return Authenticator(service, verifier, required=True)
