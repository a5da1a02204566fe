"""The three status stores, each a real thing: a SQLite file, a PostgreSQL database of its
own, and the Supabase store talking to a fake PostgREST over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.status.stores.base import StatusStore
from services.status.stores.postgres import PostgresStore
from services.status.stores.sqlite import SQLiteStore
from services.status.stores.supabase import SupabaseStore
from tests.fakes.supabase_fake import FakeSupabase


@pytest.fixture
def fake_supabase() -> Iterator[FakeSupabase]:
    with FakeSupabase() as fake:
        yield fake


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatusStore]:
    made: StatusStore
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "status.sqlite3")
    elif request.param == "postgres":
        made = PostgresStore(request.getfixturevalue("pg_dsn"))
    else:
        fake: FakeSupabase = request.getfixturevalue("fake_supabase")
        made = SupabaseStore(fake.url, fake.key, timeout=5)
    await made.migrate()
    await made.migrate()  # safe to run twice
    yield made
    await made.close()
