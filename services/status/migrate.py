"""Apply the schema in sql/: `make migrate` (the configured status store) and
`make migrate-storage-policy` (the Supabase Storage bucket and read policy, on the
database in DATABASE_URL). Both are safe to run twice."""

from __future__ import annotations

import argparse
import asyncio
import logging

import psycopg
from psycopg import sql

from services.common.config import StatusSettings, StorageSettings, load_settings, url_without_password
from services.common.logs import setup_logging
from services.status.stores.registry import build_store
from services.status.stores.sql_files import SQL_ROOT

log = logging.getLogger("migrate")


def storage_policy_sql(bucket: str) -> sql.Composed:
    text = (SQL_ROOT / "supabase" / "storage_policy.sql").read_text()
    return sql.SQL(text.replace("{bucket}", "{b}")).format(b=sql.Literal(bucket))


async def apply_storage_policy(dsn: str, bucket: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(storage_policy_sql(bucket))


async def migrate_status(settings: StatusSettings) -> None:
    store = build_store(settings)
    try:
        await store.migrate()
    finally:
        await store.close()
    log.info("status schema applied", extra={"store": store.name})


def check_reachable(dsn: str) -> None:
    """Lead with the cause when the database cannot be reached (it may not exist yet)."""
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        cause = str(exc).strip().splitlines()[0].split("FATAL:")[-1].strip()
        raise SystemExit(
            f"cannot use DATABASE_URL ({url_without_password(dsn)}): {cause}. "
            "Create the database first (for example: createdb -h HOST -U USER NAME), then run this again."
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage-policy", action="store_true", help="apply sql/supabase/storage_policy.sql")
    args = parser.parse_args()
    settings = load_settings(StatusSettings)
    setup_logging("migrate", settings.log_level)
    if args.storage_policy:
        if not settings.database_url:
            raise SystemExit("--storage-policy needs DATABASE_URL (the Supabase database)")
        check_reachable(settings.database_url)
        bucket = StorageSettings().bucket
        asyncio.run(apply_storage_policy(settings.database_url, bucket))
        log.info("storage policy applied", extra={"bucket": bucket})
    else:
        if settings.database_url and "store" not in settings.model_fields_set:
            raise SystemExit(
                "DATABASE_URL is set but STATUS_STORE is not (it defaults to sqlite): set STATUS_STORE=postgres to "
                "migrate that database, or unset DATABASE_URL to migrate the SQLite file"
            )
        if settings.store == "postgres":
            if not settings.database_url:
                raise SystemExit("STATUS_STORE=postgres needs DATABASE_URL")
            check_reachable(settings.database_url)
        asyncio.run(migrate_status(settings))


if __name__ == "__main__":
    main()
