"""PostgreSQL through psycopg 3 with an async pool.

The frontend's `videos` table is read and written in place (its `status` and
`image_upload_progress` columns; names configurable); our data lives in our own tables.
Rules are enforced in SQL inside one transaction with the video row locked, so concurrent
writers (several scenes, several gateways) cannot make progress go backwards.

One module for the whole store (its SQL beside the rules it enforces), so a reader sees
every statement that touches the frontend's table in one place (hence over 300 lines)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.config import StatusSettings, url_without_password
from services.common.errors import FailedPrecondition, NotFound
from services.common.video import SCENE_COLUMNS
from services.status.model import (
    DAY_MS,
    GENERATING,
    SCENE_GENERATING,
    Hold,
    HoldRequest,
    SceneResult,
    Spend,
    UserLimits,
    Video,
    VideoUpdate,
    check_limits,
    check_transition,
    hold_rooms,
    now_ms,
)
from services.status.stores.base import StoreUnavailable, VideosTable
from services.status.stores.rows import (
    CLEAR_PREVIEWS,
    DROP_PREVIEW,
    RUN_SELECT,
    run_columns,
    scene_from_row,
    video_from_row,
)
from services.status.stores.sql_files import migrations
from services.status.wiring import videos_table

T = TypeVar("T")
Conn = AsyncConnection[dict[str, Any]]


class PostgresStore:
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        videos: VideosTable | None = None,
        *,
        connect_timeout: float = 5.0,
        max_size: int = 10,
    ) -> None:
        self.videos = videos or VideosTable()
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=connect_timeout,
            open=False,
            # No check on checkout (a round trip per call): a connection killed by a restart
            # fails its first query, the pool drops it, and the status book retries.
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout)), "row_factory": dict_row},
            reconnect_timeout=0,
        )
        self._opened = False
        self._migrated = False
        v = self.videos
        self._v = {
            "t": sql.Identifier(v.table),
            "id": sql.Identifier(v.id),
            "status": sql.Identifier(v.status),
            "progress": sql.Identifier(v.progress),
            "owner": sql.Identifier(v.owner),
        }
        # Whether the videos table has the owner column (found when migrating).
        self._owner_column = False

    async def _run(self, work: Callable[[Conn], Awaitable[T]], *, migrating: bool = False) -> T:
        try:
            if not self._opened:
                await self.pool.open(wait=False)
                self._opened = True
            if not migrating and not self._migrated:
                # The database was away when the service started: apply the schema first.
                await self.migrate()
            async with self.pool.connection() as conn, conn.transaction():
                return await work(conn)
        except psycopg.DataError as exc:
            # An id that the videos table's id column cannot hold (a non-UUID for a uuid column).
            raise NotFound("no such video (the id does not fit the videos table's id column)") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreUnavailable(
                f"postgres: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        except psycopg.DatabaseError as exc:
            # A schema that does not match (a missing table or column): say which, as an outage.
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc

    async def migrate(self) -> None:
        async def apply(conn: Conn) -> None:
            # One migrator at a time, across processes.
            await conn.execute("SELECT pg_advisory_xact_lock(7410263)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS preview_schema_migrations (version TEXT PRIMARY KEY, applied_at_ms BIGINT)"
            )
            cur = await conn.execute("SELECT version FROM preview_schema_migrations")
            done = {row["version"] for row in await cur.fetchall()}
            for version, text in migrations("postgres"):
                if version not in done:
                    await conn.execute(sql.SQL(text))
                    await conn.execute("INSERT INTO preview_schema_migrations VALUES (%s, %s)", (version, now_ms()))

        async def owner_column(conn: Conn) -> bool:
            cur = await conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s AND column_name = %s",
                (self.videos.table, self.videos.owner),
            )
            return await cur.fetchone() is not None

        await self._run(apply, migrating=True)
        self._owner_column = await self._run(owner_column, migrating=True)
        self._migrated = True

    def _select(self, lock: bool) -> sql.Composed:
        # The app's own owner column wins over the owner a start named.
        owner = "COALESCE(NULLIF(v.{owner}::text, ''), r.owner, '')" if self._owner_column else "COALESCE(r.owner, '')"
        return sql.SQL(
            "SELECT v.{id}::text AS id, v.{status} AS status, v.{progress} AS progress, "
            + RUN_SELECT
            + ", "
            + owner
            + " AS owner "
            "FROM {t} v LEFT JOIN preview_runs r ON r.video_id = v.{id}::text "
            "WHERE v.{id} = %s" + (" FOR UPDATE OF v" if lock else "")
        ).format(**self._v)

    async def _read(self, conn: Conn, video_id: str, lock: bool = False) -> Video | None:
        # Both queries in one round trip (pipeline mode).
        async with conn.pipeline():
            video_cur = await conn.execute(self._select(lock), (video_id,))
            scenes_cur = await self._select_scenes(conn, video_id)
        return await self._video(video_cur, scenes_cur)

    @staticmethod
    async def _select_scenes(conn: Conn, video_id: str) -> psycopg.AsyncCursor[tuple[Any, ...]]:
        return await conn.cursor(row_factory=psycopg.rows.tuple_row).execute(
            f"SELECT {', '.join(SCENE_COLUMNS)} FROM preview_scenes WHERE video_id = %s ORDER BY scene", (video_id,)
        )

    async def _video(
        self, video_cur: psycopg.AsyncCursor[dict[str, Any]], scenes_cur: psycopg.AsyncCursor[tuple[Any, ...]]
    ) -> Video | None:
        row = await video_cur.fetchone()
        if row is None:
            return None
        return video_from_row(row, [scene_from_row(r) for r in await scenes_cur.fetchall()], self.videos)

    async def _read_existing(self, conn: Conn, video_id: str, lock: bool = False) -> Video:
        video = await self._read(conn, video_id, lock)
        if video is None:
            raise NotFound(f"video {video_id!r} does not exist")
        return video

    async def _raise_progress(self, conn: Conn, video_id: str, progress: int) -> None:
        await conn.execute(
            sql.SQL("UPDATE {t} SET {progress} = GREATEST(COALESCE({progress}, 0), %s) WHERE {id} = %s").format(
                **self._v
            ),
            (progress, video_id),
        )

    async def _touch_run(self, conn: Conn, video_id: str, **columns: object) -> None:
        names = ["updated_at_ms", *columns]
        values = [now_ms(), *columns.values()]
        await conn.execute(
            sql.SQL(
                "INSERT INTO preview_runs (video_id, {cols}) VALUES (%s, {vals}) "
                "ON CONFLICT (video_id) DO UPDATE SET {sets}"
            ).format(
                cols=sql.SQL(", ").join(map(sql.Identifier, names)),
                vals=sql.SQL(", ").join(sql.Placeholder() for _ in names),
                sets=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in names),
            ),
            (video_id, *values),
        )

    async def create(self, video_id: str, scene_count: int, owner: str = "") -> Video:
        async def work(conn: Conn) -> Video:
            # In an existing StoryShort database the frontend creates the row (with columns
            # we know nothing of); we insert one only when it is missing.
            found = await conn.execute(sql.SQL("SELECT 1 FROM {t} WHERE {id} = %s").format(**self._v), (video_id,))
            if await found.fetchone() is None:
                with_owner = self._owner_column and owner
                insert = (
                    "INSERT INTO {t} ({id}, {owner}) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                    if with_owner
                    else "INSERT INTO {t} ({id}) VALUES (%s) ON CONFLICT DO NOTHING"
                )
                try:
                    async with conn.transaction():
                        await conn.execute(
                            sql.SQL(insert).format(**self._v), (video_id, owner) if with_owner else (video_id,)
                        )
                except psycopg.IntegrityError as exc:
                    raise FailedPrecondition(
                        f"video {video_id!r} is not in the {self.videos.table!r} table and cannot be created with "
                        "only an id there; create the video in StoryShort first"
                    ) from exc
            await conn.execute(
                "INSERT INTO preview_runs (video_id, scene_count, updated_at_ms, owner) VALUES (%s, %s, %s, %s) "
                # The first owner named keeps the video.
                "ON CONFLICT (video_id) DO UPDATE SET owner = preview_runs.owner || "
                "CASE WHEN preview_runs.owner = '' THEN excluded.owner ELSE '' END",
                (video_id, scene_count, now_ms(), owner),
            )
            return await self._read_existing(conn, video_id)

        return await self._run(work)

    async def record_start(self, owner: str, video_id: str, scenes: int, limits: UserLimits) -> None:
        async def work(conn: Conn) -> None:
            # One start of this user at a time, across every status replica.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"storyshort-user:{owner}",))
            now = now_ms()
            await conn.execute(
                "DELETE FROM preview_user_starts WHERE owner = %s AND at_ms <= %s", (owner, now - DAY_MS)
            )
            cur = await conn.execute("SELECT at_ms, scenes FROM preview_user_starts WHERE owner = %s", (owner,))
            check_limits([(int(r["at_ms"]), int(r["scenes"])) for r in await cur.fetchall()], scenes, limits, now)
            await conn.execute(
                "INSERT INTO preview_user_starts (owner, video_id, scenes, at_ms) VALUES (%s, %s, %s, %s)",
                (owner, video_id, scenes, now),
            )

        await self._run(work)

    async def get(self, video_id: str) -> Video | None:
        return await self._run(lambda conn: self._read(conn, video_id))

    async def update(self, video_id: str, change: VideoUpdate) -> Video:
        return await self._run(lambda conn: self._update(conn, video_id, change))

    async def _update(self, conn: Conn, video_id: str, change: VideoUpdate) -> Video:
        """The change applied (FailedPrecondition, nothing written, for a refused status)."""
        current = await self._read_existing(conn, video_id, lock=True)
        if change.status is not None:
            check_transition(current.status, change.status)
            await conn.execute(
                sql.SQL("UPDATE {t} SET {status} = %s WHERE {id} = %s").format(**self._v),
                (self.videos.column_value(change.status), video_id),
            )
        if change.progress is not None:
            await self._raise_progress(conn, video_id, change.progress)
        if change.status == GENERATING:  # a run starts: the previews of an earlier one go
            for clear in CLEAR_PREVIEWS:
                await conn.execute(clear.replace("?", "%s"), (video_id,))
        resumed = change.status == GENERATING and current.status != GENERATING
        await self._touch_run(conn, video_id, **run_columns(change, resumed))
        return await self._read_existing(conn, video_id)

    async def report_scene(
        self, video_id: str, scene: SceneResult, settles: str = "", then: VideoUpdate | None = None
    ) -> Video:
        """One round trip: every statement goes out in pipeline mode; progress is computed
        in SQL from the stored scenes, under the video's row lock. ``then`` (a run's end)
        follows in the same transaction."""
        cols = sql.SQL(", ").join(map(sql.Identifier, SCENE_COLUMNS))
        sets = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in SCENE_COLUMNS if c != "scene"
        )
        upsert = sql.SQL(
            "INSERT INTO preview_scenes (video_id, {cols}, updated_at_ms) VALUES (%s, {vals}, %s) "
            "ON CONFLICT (video_id, scene) DO UPDATE SET {sets}, updated_at_ms = excluded.updated_at_ms "
            # A stored image is never replaced by a later failure of the same scene.
            "WHERE NOT (preview_scenes.state = 'stored' AND excluded.state = 'failed')"
        ).format(cols=cols, vals=sql.SQL(", ").join(sql.Placeholder() for _ in SCENE_COLUMNS), sets=sets)
        progress = sql.SQL(
            "UPDATE {t} SET {progress} = GREATEST(COALESCE({progress}, 0), ("
            "SELECT CASE WHEN COALESCE(r.scene_count, 0) <= 0 THEN 0 ELSE LEAST(100, ("
            "SELECT COUNT(*) FROM preview_scenes s WHERE s.video_id = %s AND s.state = 'stored'"
            ") * 100 / r.scene_count) END FROM preview_runs r WHERE r.video_id = %s)) WHERE {id} = %s"
        ).format(**self._v)
        lock = sql.SQL("SELECT 1 FROM {t} WHERE {id} = %s FOR UPDATE").format(**self._v)

        async def work(conn: Conn) -> tuple[Video, FailedPrecondition | None]:
            async with conn.pipeline():
                exists = await conn.execute(lock, (video_id,))
                await conn.execute(upsert, (video_id, *[getattr(scene, c) for c in SCENE_COLUMNS], now_ms()))
                await conn.execute(DROP_PREVIEW.replace("?", "%s"), (video_id, scene.scene))
                await conn.execute(progress, (video_id, video_id, video_id))
                await conn.execute(
                    "UPDATE preview_runs SET updated_at_ms = %s WHERE video_id = %s", (now_ms(), video_id)
                )
                if settles:  # the cost is in: its hold goes in the same transaction
                    await conn.execute("DELETE FROM preview_spend_holds WHERE id = %s", (settles,))
                if then is None:
                    video_cur = await conn.execute(self._select(False), (video_id,))
                    scenes_cur = await self._select_scenes(conn, video_id)
            if await exists.fetchone() is None:
                raise NotFound(f"video {video_id!r} does not exist")  # rolls the transaction back
            if then is not None:
                try:
                    return await self._update(conn, video_id, then), None
                except FailedPrecondition as refused:  # the scene is kept all the same
                    return await self._read_existing(conn, video_id), refused
            video = await self._video(video_cur, scenes_cur)
            assert video is not None
            return video, None

        video, refused = await self._run(work)
        if refused is not None:
            raise refused
        return video

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> Video:
        async def work(conn: Conn) -> Video:
            await self._read_existing(conn, video_id, lock=True)  # NotFound for a missing video
            await conn.execute(
                "INSERT INTO preview_scenes (video_id, scene, state, preview_url, preview_index, updated_at_ms) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (video_id, scene) DO UPDATE SET "
                "preview_url = excluded.preview_url, preview_index = excluded.preview_index",
                (video_id, scene, SCENE_GENERATING, url, index, now_ms()),
            )
            await conn.execute("UPDATE preview_runs SET updated_at_ms = %s WHERE video_id = %s", (now_ms(), video_id))
            return await self._read_existing(conn, video_id)

        return await self._run(work)

    async def list_stalled(self, older_than_ms: int) -> list[Video]:
        async def work(conn: Conn) -> list[Video]:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT v.{id}::text AS id FROM {t} v JOIN preview_runs r ON r.video_id = v.{id}::text "
                    "WHERE v.{status} = %s AND r.updated_at_ms < %s ORDER BY r.updated_at_ms"
                ).format(**self._v),
                (self.videos.column_value(GENERATING), older_than_ms),
            )
            return [await self._read_existing(conn, row["id"]) for row in await cur.fetchall()]

        return await self._run(work)

    async def spend_since(self, since_ms: int, owner: str = "") -> Spend:
        async def work(conn: Conn) -> Spend:
            mine = " AND video_id IN (SELECT video_id FROM preview_runs WHERE owner = %s)" if owner else ""
            cur = await conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0) AS usd, COUNT(*) FILTER (WHERE NOT cost_known) AS unpriced "
                "FROM preview_scenes WHERE paid_at_ms >= %s" + mine,
                (since_ms, owner) if owner else (since_ms,),
            )
            row = await cur.fetchone()
            return Spend(float(row["usd"]), int(row["unpriced"])) if row else Spend()

        return await self._run(work)

    async def reserve_spend(self, request: HoldRequest) -> Hold:
        caps = request.caps

        async def work(conn: Conn) -> Hold:
            cur = await conn.execute(
                "SELECT * FROM reserve_preview_spend(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    request.reservation_id,
                    request.video_id,
                    request.owner,
                    request.usd,
                    caps.since_ms,
                    caps.daily_usd,
                    caps.video_usd,
                    caps.owner_usd,
                    request.ttl_ms,
                ),
            )
            row = await cur.fetchone()
            assert row is not None  # the function answers one row
            return Hold(request.reservation_id, float(row["granted_usd"]), hold_rooms(row))

        return await self._run(work)

    async def release_spend(self, reservation_id: str) -> bool:
        async def work(conn: Conn) -> bool:
            cur = await conn.execute("DELETE FROM preview_spend_holds WHERE id = %s", (reservation_id,))
            return cur.rowcount > 0

        return await self._run(work)

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()


def build(settings: StatusSettings) -> PostgresStore:
    if not settings.database_url:
        raise SystemExit("STATUS_STORE=postgres needs DATABASE_URL, for example postgresql://user@host:5432/db")
    return PostgresStore(settings.database_url, videos_table(settings))


def describe(settings: StatusSettings) -> str:
    return f"PostgreSQL ({url_without_password(settings.database_url or '')})"
