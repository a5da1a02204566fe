"""Build the configured store."""

from __future__ import annotations

from services.common.config import StatusSettings
from services.common.logs import register_secret
from services.status.model import ASSETS_GENERATED, FAILED, GENERATING
from services.status.stores.base import StatusStore, VideosTable
from services.status.stores.postgres import PostgresStore
from services.status.stores.sqlite import SQLiteStore


def videos_table(settings: StatusSettings) -> VideosTable:
    values = (
        (GENERATING, settings.status_generating),
        (ASSETS_GENERATED, settings.status_done),
        (FAILED, settings.status_failed),
    )
    if len({v for _, v in values}) != len(values):
        raise SystemExit("VIDEO_STATUS_GENERATING, VIDEO_STATUS_DONE and VIDEO_STATUS_FAILED must differ")
    return VideosTable(
        table=settings.videos_table,
        id=settings.id_column,
        status=settings.status_column,
        progress=settings.progress_column,
        owner=settings.owner_column,
        values=tuple((ours, theirs) for ours, theirs in values if ours != theirs),
    )


def build_store(settings: StatusSettings) -> StatusStore:
    if settings.store == "postgres":
        if not settings.database_url:
            raise SystemExit("STATUS_STORE=postgres needs DATABASE_URL, for example postgresql://user@host:5432/db")
        return PostgresStore(settings.database_url, videos_table(settings))
    if settings.store == "supabase":
        from services.status.stores.supabase import SupabaseStore

        if not settings.supabase_url or not settings.supabase_service_role_key:
            raise SystemExit("STATUS_STORE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        key = settings.supabase_service_role_key.get_secret_value()
        register_secret(key)
        return SupabaseStore(settings.supabase_url, key, videos_table(settings), settings.attempt_timeout)
    return SQLiteStore(settings.sqlite_file)
