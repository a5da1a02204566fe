"""The status stores' registry: one list read by the settings, the status service and
`make run`'s description. An unknown name is refused naming the known ones (it used to
become SQLite silently in the service), every listed store can be built and described, and
a description never carries a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.config import StatusSettings
from services.status.stores.registry import STORES, build_store, describe_store, store_module
from tools.run_local import describe


def test_an_unknown_store_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError) as refused:
        StatusSettings.model_validate({"STATUS_STORE": "mysql"})
    message = str(refused.value)
    assert "unknown status store 'mysql'" in message
    assert all(name in message for name in STORES)
    with pytest.raises(ValidationError):
        describe({"STATUS_STORE": "mysql"})  # make run says so before starting anything


@pytest.mark.parametrize("name", list(STORES))
def test_every_listed_store_has_its_hooks(name: str) -> None:
    module = store_module(name)
    assert callable(module.build) and callable(module.describe)


async def test_the_default_store_is_built_through_the_registry(tmp_path: Path) -> None:
    settings = StatusSettings.model_validate({"STATUS_SQLITE_PATH": str(tmp_path / "s.sqlite3")})
    store = build_store(settings)
    try:
        assert store.name == "sqlite"
        assert describe_store(settings) == f"SQLite ({tmp_path / 's.sqlite3'})"
    finally:
        await store.close()


def test_stores_that_need_settings_say_which() -> None:
    with pytest.raises(SystemExit, match="DATABASE_URL"):
        build_store(StatusSettings.model_validate({"STATUS_STORE": "postgres"}))
    with pytest.raises(SystemExit, match="SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"):
        build_store(StatusSettings.model_validate({"STATUS_STORE": "supabase"}))


def test_a_description_carries_no_secret() -> None:
    postgres = StatusSettings.model_validate(
        {"STATUS_STORE": "postgres", "DATABASE_URL": "postgresql://app:s3cret-pw@db.example:5432/app"}
    )
    supabase = StatusSettings.model_validate(
        {"STATUS_STORE": "supabase", "SUPABASE_URL": "https://p.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "srk-secret"}
    )
    assert "s3cret-pw" not in describe_store(postgres) and "db.example" in describe_store(postgres)
    assert describe_store(supabase) == "Supabase (https://p.supabase.co)"
