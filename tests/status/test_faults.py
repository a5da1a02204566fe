"""Store faults: Get answers degraded within its budget and never an error; the breaker
answers without touching the store while it is open and closes after recovery."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from services.common.deadlines import Deadline
from services.common.errors import Unavailable
from services.status.book import StatusBook, StoreBreaker
from services.status.model import VideoUpdate
from services.status.stores.postgres import PostgresStore
from services.status.stores.supabase import SupabaseStore
from tests.conftest import eventually
from tests.fakes import supabase_fake as sf
from tests.fakes.supabase_fake import FakeSupabase
from tests.fakes.tcp_proxy import FaultyProxy
from tools.processes import free_port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def book_for(store: object, **kw: object) -> StatusBook:
    return StatusBook(store, attempt_timeout=0.5, breaker=StoreBreaker("test", threshold=2, probe_every=0.2), **kw)  # type: ignore[arg-type]


async def timed_get(book: StatusBook, video_id: str, deadline: float = 3.0) -> tuple[object, float]:
    started = time.monotonic()
    answer = await book.get(video_id, Deadline.of(deadline))
    return answer, time.monotonic() - started


@pytest.mark.parametrize("kind", ["refused", "silent"])
async def test_postgres_down_answers_degraded_within_the_budget(kind: str, silent_server: int) -> None:
    port = free_port() if kind == "refused" else silent_server
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/none", connect_timeout=1)
    book = book_for(store)
    try:
        answer, elapsed = await timed_get(book, "v1", deadline=3.0)
        assert answer.degraded and answer.video.status == "processing"  # type: ignore[attr-defined]
        assert elapsed < 3.0 + 0.5
    finally:
        await store.close()


async def test_breaker_answers_at_once_without_touching_the_store_and_closes_after_recovery() -> None:
    with FakeSupabase() as fake:
        store = SupabaseStore(fake.url, fake.key, timeout=2)
        book = book_for(store)
        await store.create("v1", 2)
        await store.update("v1", VideoUpdate(status="generating_images", progress=50))
        seen, _ = await timed_get(book, "v1")
        assert not seen.degraded  # type: ignore[attr-defined]

        fake.inject("rest", sf.UNAVAILABLE)
        for _ in range(2):  # threshold failures open the breaker
            answer, _ = await timed_get(book, "v1")
            assert answer.degraded  # type: ignore[attr-defined]
        assert book.breaker.is_open
        before = fake.count("rest")
        answer, _ = await timed_get(book, "v1")
        # At once: no store attempt was made (its latency is in bench/, status-reads).
        assert fake.count("rest") == before, "an open breaker must not touch the store"
        # The last known status, marked degraded with its age.
        assert answer.degraded and answer.video.status == "generating_images" and answer.video.progress == 50  # type: ignore[attr-defined]
        assert answer.age_ms >= 0  # type: ignore[attr-defined]

        fake.inject("rest", sf.Pass())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer, _ = await timed_get(book, "v1")
            if not answer.degraded:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert not answer.degraded and not book.breaker.is_open  # type: ignore[attr-defined]
        await store.close()


async def test_a_store_that_fails_twice_then_recovers_answers_fresh() -> None:
    with FakeSupabase() as fake:
        store = SupabaseStore(fake.url, fake.key, timeout=2)
        await store.create("v1", 1)
        fake.inject("rest", sf.UNAVAILABLE, sf.UNAVAILABLE, sf.Pass())
        before = fake.count("rest")
        answer, _ = await timed_get(book_for(store), "v1")
        assert not answer.degraded  # type: ignore[attr-defined]
        assert fake.count("rest") - before >= 3
        await store.close()


async def test_a_hanging_postgrest_answers_degraded_within_the_budget_and_the_client_does_not_retry() -> None:
    with FakeSupabase() as fake:
        store = SupabaseStore(fake.url, fake.key, timeout=5)
        fake.inject("rest", sf.Hang())
        answer, elapsed = await timed_get(book_for(store), "v1", deadline=2.0)
        assert answer.degraded  # type: ignore[attr-defined]
        assert elapsed < 2.0 + 0.5
        # Our policy's 3 attempts, each one request: the client's own GET retries are off.
        assert fake.count("rest") <= 3
        assert all("x-retry-count" not in r.headers for r in fake.requests)
        await store.close()


async def test_postgrest_errors_are_retried_by_our_policy_alone() -> None:
    """A 503 is what the postgrest client would retry by itself (with an X-Retry-Count
    header) were its retries on: each of our policy's attempts must be exactly one request."""
    with FakeSupabase() as fake:
        store = SupabaseStore(fake.url, fake.key, timeout=5)
        await store.migrate()
        fake.inject("rest", sf.UNAVAILABLE)
        before = fake.count("rest")
        # Attempts long enough (3 s) for the client's own retry (after 1 s) to happen inside one.
        book = StatusBook(store, attempt_timeout=3, breaker=StoreBreaker("test", threshold=5))
        answer, _ = await timed_get(book, "v1", deadline=12.0)
        assert answer.degraded  # type: ignore[attr-defined]
        assert fake.count("rest") - before == 3, "three attempts of ours, one request each"
        assert all("x-retry-count" not in r.headers for r in fake.requests)
        await store.close()


async def test_postgres_connections_killed_mid_run_are_replaced(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    book = book_for(store)
    await store.migrate()
    await store.create("v1", 2)
    assert not (await book.get("v1", Deadline.of(5))).degraded
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    answer = await book.get("v1", Deadline.of(5))
    assert not answer.degraded and answer.video.video_id == "v1"
    updated = await book.update("v1", VideoUpdate(status="generating_images"), Deadline.of(5))
    assert updated.status == "generating_images"
    await store.close()


async def test_a_postgres_that_stops_answering_mid_life_holds_no_call_past_its_budget(pg_dsn: str) -> None:
    """Connections open and working, then nothing answers (a hung server or network): psycopg,
    cancelled in a query, cancels it on the server and waits for that (up to 5 s + 5 s), so an
    attempt cut at its timeout held its caller that much longer. Reads answer degraded and
    writes UNAVAILABLE within their deadline; thawed, the store answers again."""
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        store = PostgresStore(proxy.dsn(pg_dsn), connect_timeout=1)
        book = book_for(store)
        try:
            await store.migrate()
            await store.create("v1", 2)
            assert not (await book.get("v1", Deadline.of(5))).degraded  # a pooled connection, working
            proxy.freeze()
            answer, elapsed = await timed_get(book, "v1", deadline=2.0)
            assert answer.degraded and answer.video.video_id == "v1"  # type: ignore[attr-defined]
            assert elapsed < 2.0 + 1.0, f"a read took {elapsed:.1f} s with a 2 s deadline"
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await book.update("v1", VideoUpdate(progress=50), Deadline.of(2.0))
            assert time.monotonic() - started < 2.0 + 1.0
            proxy.thaw()

            async def fresh() -> bool:
                return not (await book.get("v1", Deadline.of(2))).degraded

            assert await eventually(fresh, timeout=30, every=0.2)
            # The write cut at its timeout may have reached the database after the thaw
            # (its bytes were on their way): whether it did or not, progress only goes up.
            assert (await book.get("v1", Deadline.of(5))).video.progress in (0, 50)
        finally:
            proxy.thaw()
            await store.close()


async def test_existing_storyshort_database_is_used_as_it_is(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE videos (id UUID PRIMARY KEY, title TEXT NOT NULL, status TEXT DEFAULT 'draft', "
            "image_upload_progress INTEGER DEFAULT 0, created_at TIMESTAMPTZ DEFAULT now())"
        )
        conn.execute("INSERT INTO videos (id, title) VALUES ('0b7e8f64-1111-4c3a-9b1e-2f6a7f1d0c11', 'My story')")
    store = PostgresStore(pg_dsn)
    await store.migrate()
    vid = "0b7e8f64-1111-4c3a-9b1e-2f6a7f1d0c11"
    video = await store.create(vid, 3)
    assert video.status == "draft" and video.scene_count == 3
    await store.update(vid, VideoUpdate(status="generating_images", progress=33))
    await store.close()
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT title, status, image_upload_progress FROM videos").fetchone()
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'videos' ORDER BY ordinal_position"
            )
        ]
    assert row == ("My story", "generating_images", 33)
    assert columns == ["id", "title", "status", "image_upload_progress", "created_at"]


async def test_column_names_are_configurable_for_other_schemas(pg_dsn: str) -> None:
    from services.status.stores.base import VideosTable

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE stories (story_id TEXT PRIMARY KEY, state TEXT DEFAULT 'draft', pct INTEGER DEFAULT 0)"
        )
    store = PostgresStore(pg_dsn, VideosTable("stories", "story_id", "state", "pct"))
    await store.migrate()
    await store.create("s1", 2)
    await store.update("s1", VideoUpdate(status="generating_images", progress=50))
    await store.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT story_id, state, pct FROM stories").fetchone() == ("s1", "generating_images", 50)


async def test_an_id_that_does_not_fit_a_uuid_column_is_not_found(pg_dsn: str) -> None:
    from services.common.errors import FailedPrecondition, NotFound

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE videos (id UUID PRIMARY KEY, title TEXT NOT NULL, status TEXT DEFAULT 'draft', "
            "image_upload_progress INTEGER DEFAULT 0)"
        )
    store = PostgresStore(pg_dsn)
    await store.migrate()
    with pytest.raises(NotFound):
        await store.get("not-a-uuid")
    with pytest.raises(FailedPrecondition, match="create the video in StoryShort first"):
        await store.create("0b7e8f64-2222-4c3a-9b1e-2f6a7f1d0c11", 2)
    await store.close()


async def test_a_non_uuid_id_on_supabase_is_not_found_and_never_opens_the_breaker() -> None:
    """PostgREST answers 22P02 for an id a uuid column cannot hold: that is a video that does
    not exist (as on PostgreSQL), not a store outage that would degrade everyone's reads."""
    from services.common.errors import NotFound

    with FakeSupabase(uuid_columns={"videos": {"id"}}) as fake:
        store = SupabaseStore(fake.url, fake.key, timeout=5)
        book = StatusBook(store, attempt_timeout=2)
        await store.migrate()
        for _ in range(5):
            with pytest.raises(NotFound):
                await book.get("not-a-uuid", Deadline.of(5))
        assert not book.breaker.is_open and book.breaker.failures == 0
        real = "0b7e8f64-2222-4c3a-9b1e-2f6a7f1d0c11"
        created = await book.create(real, 2, Deadline.of(5))
        assert created.video_id == real
        answer = await book.get(real, Deadline.of(5))
        assert not answer.degraded
        await store.close()
