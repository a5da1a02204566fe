"""An existing StoryShort database, as it is: a `videos` table with columns of its own (NOT
NULL, defaults), a trigger that sets `updated_at`, row-level security on, and rows in
statuses this system does not own. A run may start from any of them; only the status and
progress columns are written, in the frontend's own vocabulary when it is configured.

The same table on real PostgreSQL and through the PostgREST fake (the Supabase store)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from services.common.errors import FailedPrecondition
from services.status.model import ASSETS_GENERATED, FAILED, GENERATING, SceneResult, VideoUpdate
from services.status.stores.base import StatusStore, VideosTable
from services.status.stores.postgres import PostgresStore
from services.status.stores.supabase import SupabaseStore
from tests.fakes.supabase_fake import FakeSupabase

OWNER = "7d4c1f0e-5b6a-4e8f-9a1b-2c3d4e5f6a7b"
# One row per status this system does not own, NULL included.
FOREIGN = {
    "0b7e8f64-0000-4c3a-9b1e-2f6a7f1d0c00": None,
    "0b7e8f64-0001-4c3a-9b1e-2f6a7f1d0c01": "processing",
    "0b7e8f64-0002-4c3a-9b1e-2f6a7f1d0c02": "rendering",
    "0b7e8f64-0003-4c3a-9b1e-2f6a7f1d0c03": "completed",
}
# The frontend's own words for what we write.
VOCABULARY = VideosTable(values=((GENERATING, "generating"), (ASSETS_GENERATED, "images_ready"), (FAILED, "error")))

STORYSHORT_VIDEOS = """
CREATE TABLE videos (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID NOT NULL,
  title TEXT NOT NULL DEFAULT 'Untitled',
  status TEXT,
  image_upload_progress INTEGER NOT NULL DEFAULT 0,
  render_settings JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER videos_updated_at BEFORE UPDATE ON videos FOR EACH ROW EXECUTE FUNCTION set_updated_at();
ALTER TABLE videos ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_videos ON videos USING (user_id::text = current_setting('request.jwt.claim.sub', true));
"""


@dataclass
class Database:
    store: StatusStore
    rows: Any  # () -> {id: row as a dict}, read from the database itself


def _pg_rows(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT id::text, user_id::text, title, status, image_upload_progress, render_settings, "
            "created_at, updated_at FROM videos"
        )
        names = [c.name for c in cur.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


@pytest.fixture
def supabase_videos() -> Iterator[FakeSupabase]:
    def touch(row: dict[str, Any]) -> None:  # the trigger
        row["updated_at"] = datetime.now(UTC).isoformat()

    then = "2026-01-01T00:00:00+00:00"
    rows = [
        {
            "id": vid,
            "user_id": OWNER,
            "title": f"Story {n}",
            "status": status,
            "image_upload_progress": 0,
            "render_settings": {"fps": 30},
            "created_at": then,
            "updated_at": then,
        }
        for n, (vid, status) in enumerate(FOREIGN.items())
    ]
    with FakeSupabase(
        tables={"videos": rows},
        uuid_columns={"videos": {"id", "user_id"}},
        defaults={"videos": {"status": None, "title": "Untitled", "render_settings": {}}},
        not_null={"videos": {"user_id", "title", "image_upload_progress", "render_settings"}},
        on_update={"videos": touch},
    ) as fake:
        yield fake


@pytest.fixture(params=["postgres", "supabase"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    store: StatusStore
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(STORYSHORT_VIDEOS)
            for n, (vid, status) in enumerate(FOREIGN.items()):
                conn.execute(
                    "INSERT INTO videos (id, user_id, title, status, render_settings, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, '{\"fps\": 30}', '2026-01-01', '2026-01-01')",
                    (vid, OWNER, f"Story {n}", status),
                )
        store = PostgresStore(dsn, VOCABULARY)
        db = Database(store, lambda: _pg_rows(dsn))
    else:
        fake: FakeSupabase = request.getfixturevalue("supabase_videos")
        store = SupabaseStore(fake.url, fake.key, VOCABULARY, timeout=5)
        db = Database(store, lambda: {r["id"]: dict(r) for r in fake.tables["videos"]})
    await store.migrate()
    yield db
    await store.close()


async def test_a_run_starts_from_any_status_this_system_does_not_own(database: Database) -> None:
    store = database.store
    before = database.rows()
    for vid, status in FOREIGN.items():
        video = await store.create(vid, 2)  # the row exists: nothing inserted
        assert video.status == (status or "draft")
        started = await store.update(vid, VideoUpdate(status=GENERATING, scene_count=2))
        assert started.status == GENERATING
        for scene in (1, 2):
            await store.report_scene(vid, SceneResult(scene=scene, state="stored", url=f"https://x/{scene}"))
        done = await store.update(vid, VideoUpdate(status=ASSETS_GENERATED, progress=100))
        assert (done.status, done.progress) == (ASSETS_GENERATED, 100)
    after = database.rows()
    assert set(after) == set(before), "no row added or removed"
    for vid in FOREIGN:
        row, old = after[vid], before[vid]
        assert row["status"] == "images_ready", "the frontend's word for done"
        assert row["image_upload_progress"] == 100
        for column in ("user_id", "title", "render_settings", "created_at"):
            assert row[column] == old[column], f"{column} must not be touched"
        assert row["updated_at"] != old["updated_at"], "the table's own trigger ran on our writes"


async def test_the_configured_words_are_written_and_read_back_as_ours(database: Database) -> None:
    store = database.store
    vid = next(iter(FOREIGN))
    await store.update(vid, VideoUpdate(status=GENERATING, scene_count=1))
    assert database.rows()[vid]["status"] == "generating"
    assert (await store.get(vid)).status == GENERATING  # type: ignore[union-attr]
    assert [v.video_id for v in await store.list_stalled(2**62)] == [vid]
    # A run cannot start twice: "generating" is ours, not foreign.
    with pytest.raises(FailedPrecondition):
        await store.update(vid, VideoUpdate(status="draft"))
    await store.update(vid, VideoUpdate(status=FAILED, error="boom"))
    assert database.rows()[vid]["status"] == "error"
    resumed = await store.update(vid, VideoUpdate(status=GENERATING))
    assert resumed.status == GENERATING and resumed.error == ""


async def test_a_video_the_app_has_not_created_is_refused_with_the_way_out(database: Database) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(FailedPrecondition, match="create the video in StoryShort first"):
        await database.store.create(missing, 2)
    assert missing not in database.rows()


def test_row_level_security_is_on_in_the_postgres_table(pg_dsn: str) -> None:
    """The table really has RLS on (the store works because it connects as the table's
    owner, as Supabase's `postgres` role does); a role under the policy sees no row."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(STORYSHORT_VIDEOS)
        conn.execute("INSERT INTO videos (user_id) VALUES (%s)", (OWNER,))
        enabled = conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'videos'").fetchone()
        role = f"reader_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"GRANT SELECT ON videos TO {role}")
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                seen = conn.execute("SELECT count(*) FROM videos").fetchone()
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"REVOKE ALL ON videos FROM {role}")
            conn.execute(f"DROP ROLE {role}")
    assert enabled == (True,) and seen == (0,)


async def test_the_apps_owner_column_says_whose_video_it_is(database: Database) -> None:
    store = database.store
    vid = next(iter(FOREIGN))
    assert (await store.get(vid)).owner == OWNER  # type: ignore[union-attr]
    # A video the app has not created, started by a signed-in user: the row is inserted
    # with its owner, which the table requires.
    new = str(uuid.uuid4())
    created = await store.create(new, 2, owner=OWNER)
    assert created.owner == OWNER
    assert str(database.rows()[new]["user_id"]) == OWNER
