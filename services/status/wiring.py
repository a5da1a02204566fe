"""Build the configured store."""

from __future__ import annotations

from services.common.config import StatusSettings
from services.status.stores.base import StatusStore
from services.status.stores.sqlite import SQLiteStore


def build_store(settings: StatusSettings) -> StatusStore:
    if settings.store == "postgres":
        from services.status.stores.postgres import PostgresStore

        if not settings.database_url:
            raise SystemExit("STATUS_STORE=postgres needs DATABASE_URL")
        return PostgresStore(settings.database_url)
    if settings.store == "supabase":
        from services.status.stores.supabase import SupabaseStore

        return SupabaseStore.from_settings(settings)
    return SQLiteStore(settings.sqlite_file)
