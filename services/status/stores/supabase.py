"""Supabase through PostgREST with the real `supabase` client and the service-role key.

PostgREST has no multi-statement transactions, so each rule is one conditional write that
the database applies atomically: progress rises only with `... WHERE progress < new`; a
status changes only from the status it was read in (compare-and-set, re-read on a race);
a failed scene report never overwrites a stored one; a run's end writes its summary before
its final status, so whoever reads the status reads the summary. The client's own GET
retries are off: the status book is the only retry layer. The schema is applied with the
PostgreSQL migrator against the Supabase database (`STATUS_STORE=postgres make migrate`).

Every PostgREST request that touches the frontend's table is in this module, so they read
in one place (hence its length); spend and its holds, which never do, are in
supabase_spend.py."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError
from supabase import AClient

from services.common.config import StatusSettings
from services.common.errors import FailedPrecondition, NotFound
from services.common.logs import register_secret
from services.common.supabase import ServerSupabase
from services.common.video import SCENE_COLUMNS
from services.status.model import (
    DAY_MS,
    GENERATING,
    SCENE_GENERATING,
    SceneResult,
    UserLimits,
    Video,
    VideoUpdate,
    check_limits,
    check_transition,
    now_ms,
    progress_for,
)
from services.status.stores.base import StoreUnavailable, VideosTable
from services.status.stores.rows import run_columns, video_from_row
from services.status.stores.supabase_spend import HOLDS_MISSING, SupabaseSpend
from services.status.stores.supabase_spend import rows as _rows
from services.status.wiring import videos_table

T = TypeVar("T")
log = logging.getLogger(__name__)
CAS_TRIES = 5


def _one(response: Any) -> dict[str, Any]:
    """The row of a maybe_single() answer ({} for none)."""
    return dict(response.data) if response is not None and response.data else {}


PREVIEWS_MISSING = (
    "scene previews are not in this Supabase database (sql/postgres/007_scene_previews.sql): scenes show "
    "no preview until it is applied with STATUS_STORE=postgres DATABASE_URL=<the Supabase database URL> make migrate"
)
# A scene's preview, cleared.
NO_PREVIEW = {"preview_url": "", "preview_index": 0}


class SupabaseStore(SupabaseSpend):
    name = "supabase"

    def __init__(
        self, url: str, service_role_key: str, videos: VideosTable | None = None, timeout: float = 5.0
    ) -> None:
        self.supabase = ServerSupabase(url, service_role_key, timeout)
        self.videos = videos or VideosTable()
        self._owner_column = False  # whether the videos table has the owner column
        # The scene columns the database has (without the preview ones before 007).
        self._scene_columns = SCENE_COLUMNS

    @property
    def _previews(self) -> bool:
        return "preview_url" in self._scene_columns

    async def _db(self) -> AClient:
        return await self.supabase.client()

    async def _run(self, work: Callable[[AClient], Awaitable[T]]) -> T:
        try:
            return await work(await self._db())
        except APIError as exc:
            code = str(exc.code or "")
            if code == "22P02":
                # An id the videos table's id column cannot hold (a non-UUID for a uuid
                # column): no such video, as the PostgreSQL store says; never an outage.
                raise NotFound("no such video (the id does not fit the videos table's id column)") from exc
            if code in ("23502", "23503"):
                raise FailedPrecondition(
                    f"video is not in the {self.videos.table!r} table and cannot be created with only an id "
                    "there; create the video in StoryShort first"
                ) from exc
            if code.startswith(("PGRST3", "42")) or code in ("401", "403"):
                raise StoreUnavailable(f"supabase rejected the request: {code} {exc.message}") from exc
            raise StoreUnavailable(f"supabase error {code}: {exc.message}") from exc
        except (httpx.HTTPError, ValueError) as exc:
            # ValueError: an answer that is not the JSON PostgREST promises.
            raise StoreUnavailable(f"supabase: {type(exc).__name__}") from exc

    async def migrate(self) -> None:
        """PostgREST cannot run DDL: check that the schema is there and say how to apply it."""

        async def check(db: AClient) -> None:
            # paid_at_ms came with sql/postgres/002_spend.sql: its absence means an old schema.
            await db.table("preview_scenes").select("paid_at_ms").limit(1).execute()
            for table in (self.videos.table, "preview_runs", "preview_scenes"):
                try:
                    await db.table(table).select("*").limit(1).execute()
                except APIError as exc:
                    raise StoreUnavailable(
                        f"table {table!r} is missing in Supabase ({exc.code}); apply sql/postgres with "
                        "STATUS_STORE=postgres DATABASE_URL=<the Supabase database URL> make migrate"
                    ) from exc

        async def owner_column(db: AClient) -> bool:
            try:
                await db.table(self.videos.table).select(self.videos.owner).limit(1).execute()
            except APIError as exc:
                if str(exc.code or "") in ("42703", "PGRST204"):  # no such column
                    return False
                raise
            return True

        async def holds(db: AClient) -> None:
            try:
                await db.table("preview_spend_holds").select("id").limit(1).execute()
            except APIError as exc:
                log.warning(HOLDS_MISSING, extra={"code": exc.code})

        async def previews(db: AClient) -> bool:
            try:
                await db.table("preview_scenes").select("preview_url").limit(1).execute()
            except APIError as exc:
                if str(exc.code or "") in ("42703", "PGRST204"):
                    log.warning(PREVIEWS_MISSING, extra={"code": exc.code})
                    return False
                raise
            return True

        await self._run(check)
        self._owner_column = await self._run(owner_column)
        await self._run(holds)
        if not await self._run(previews):
            self._scene_columns = tuple(c for c in SCENE_COLUMNS if not c.startswith("preview_"))

    async def _read(self, db: AClient, video_id: str) -> Video | None:
        v = self.videos
        row = _one(
            await db.table(v.table)
            .select(",".join([v.id, v.status, v.progress] + ([v.owner] if self._owner_column else [])))
            .eq(v.id, video_id)
            .maybe_single()
            .execute()
        )
        if not row:
            return None
        run = _one(await db.table("preview_runs").select("*").eq("video_id", video_id).maybe_single().execute())
        scenes = _rows(
            await db.table("preview_scenes")
            .select(",".join(self._scene_columns))
            .eq("video_id", video_id)
            .order("scene")
            .execute()
        )
        return video_from_row(
            {
                **run,
                "id": row[v.id],
                "status": row[v.status],
                "progress": row[v.progress],
                # The app's own owner column wins over the owner a start named.
                "owner": (row.get(v.owner) if self._owner_column else None) or run.get("owner"),
            },
            [SceneResult(**{c: s[c] for c in self._scene_columns}) for s in scenes],
            v,
        )

    async def _read_existing(self, db: AClient, video_id: str) -> Video:
        video = await self._read(db, video_id)
        if video is None:
            raise NotFound(f"video {video_id!r} does not exist")
        return video

    async def _raise_progress(self, db: AClient, video_id: str, progress: int) -> None:
        v = self.videos
        await db.table(v.table).update({v.progress: progress}).eq(v.id, video_id).lt(v.progress, progress).execute()

    async def _touch_run(self, db: AClient, video_id: str, **columns: object) -> None:
        await (
            db.table("preview_runs")
            .upsert({"video_id": video_id, "updated_at_ms": now_ms(), **columns}, on_conflict="video_id")
            .execute()
        )

    async def create(self, video_id: str, scene_count: int, owner: str = "") -> Video:
        async def work(db: AClient) -> Video:
            v = self.videos
            # In an existing StoryShort database the frontend creates the row; insert only when missing.
            found = _one(await db.table(v.table).select(v.id).eq(v.id, video_id).maybe_single().execute())
            if not found:
                row = {v.id: video_id, **({v.owner: owner} if owner and self._owner_column else {})}
                await db.table(v.table).upsert(row, on_conflict=v.id, ignore_duplicates=True).execute()
            await (
                db.table("preview_runs")
                .upsert(
                    {"video_id": video_id, "scene_count": scene_count, "updated_at_ms": now_ms()},
                    on_conflict="video_id",
                    ignore_duplicates=True,
                )
                .execute()
            )
            if owner:  # the first owner named keeps the video
                await (
                    db.table("preview_runs").update({"owner": owner}).eq("video_id", video_id).eq("owner", "").execute()
                )
            return await self._read_existing(db, video_id)

        return await self._run(work)

    async def record_start(self, owner: str, video_id: str, scenes: int, limits: UserLimits) -> None:
        """PostgREST has no transactions: check, then insert. Two starts of one user in the
        same instant on two replicas may both pass (README: Per-user limits)."""

        async def work(db: AClient) -> None:
            now = now_ms()
            starts = _rows(
                await db.table("preview_user_starts")
                .select("at_ms,scenes")
                .eq("owner", owner)
                .gt("at_ms", now - DAY_MS)
                .execute()
            )
            check_limits([(int(r["at_ms"]), int(r["scenes"])) for r in starts], scenes, limits, now)
            await (
                db.table("preview_user_starts")
                .insert({"owner": owner, "video_id": video_id, "scenes": scenes, "at_ms": now})
                .execute()
            )

        await self._run(work)

    async def get(self, video_id: str) -> Video | None:
        return await self._run(lambda db: self._read(db, video_id))

    async def _status(self, db: AClient, video_id: str) -> tuple[Any, str]:
        """The video's status as stored (NULL included) and as we name it."""
        v = self.videos
        row = _one(await db.table(v.table).select(v.status).eq(v.id, video_id).maybe_single().execute())
        if not row:
            raise NotFound(f"video {video_id!r} does not exist")
        return row[v.status], v.status_of(row[v.status])

    async def _set_status(self, db: AClient, video_id: str, new: str) -> str:
        """Compare-and-set: answer the status it replaced."""
        v = self.videos
        for _ in range(CAS_TRIES):
            raw, current = await self._status(db, video_id)
            check_transition(current, new)
            if current == new:
                return current
            query = db.table(v.table).update({v.status: v.column_value(new)}).eq(v.id, video_id)
            # Compare-and-set on the value as stored (NULL included: a row nobody gave a status).
            query = query.is_(v.status, "null") if raw is None else query.eq(v.status, raw)
            if (await query.execute()).data:
                return current
        raise FailedPrecondition(f"video {video_id!r} kept changing status; try again")

    async def update(self, video_id: str, change: VideoUpdate) -> Video:
        async def work(db: AClient) -> Video:
            if change.status is not None and change.status != GENERATING:
                # A run's end: PostgREST has no transaction across requests, so its summary,
                # error and progress are written first and the status last. Whoever reads
                # the final status (a poller, the event stream) reads what came with it.
                check_transition((await self._status(db, video_id))[1], change.status)
                if change.progress is not None:
                    await self._raise_progress(db, video_id, change.progress)
                await self._touch_run(db, video_id, **run_columns(change, resumed=False))
                await self._set_status(db, video_id, change.status)
                return await self._read_existing(db, video_id)
            resumed = False
            if change.status is not None:
                before = await self._set_status(db, video_id, change.status)
                resumed = before != GENERATING
                if self._previews:  # a run starts: the previews of an earlier one go
                    scenes = db.table("preview_scenes")
                    await scenes.update(NO_PREVIEW).eq("video_id", video_id).neq("preview_url", "").execute()
                    await scenes.delete().eq("video_id", video_id).eq("state", SCENE_GENERATING).execute()
            else:
                await self._read_existing(db, video_id)
            if change.progress is not None:
                await self._raise_progress(db, video_id, change.progress)
            await self._touch_run(db, video_id, **run_columns(change, resumed))
            return await self._read_existing(db, video_id)

        return await self._run(work)

    async def report_scene(
        self, video_id: str, scene: SceneResult, settles: str = "", then: VideoUpdate | None = None
    ) -> Video:
        """The scene, then (PostgREST has no transaction across requests) its spend hold:
        between the two its cost counts twice, never not at all; then ``then`` (a run's end),
        as update writes it."""

        async def work(db: AClient) -> Video | None:
            current = await self._read_existing(db, video_id)
            values = {c: v for c, v in asdict(scene).items() if c in self._scene_columns}
            row = {"video_id": video_id, **values, "updated_at_ms": now_ms()}
            scenes = db.table("preview_scenes")
            if scene.state == "stored":
                await scenes.upsert(row, on_conflict="video_id,scene").execute()
            else:
                # Never overwrite a stored image with a later failure of the same scene.
                changed = await (
                    scenes.update(row)
                    .eq("video_id", video_id)
                    .eq("scene", scene.scene)
                    .neq("state", "stored")
                    .execute()
                )
                if not changed.data:
                    await scenes.upsert(row, on_conflict="video_id,scene", ignore_duplicates=True).execute()
                    if self._previews:  # a stored image stays; its preview still goes
                        await scenes.update(NO_PREVIEW).eq("video_id", video_id).eq("scene", scene.scene).execute()
            stored = await (
                db.table("preview_scenes")
                .select("scene", count="exact")  # type: ignore[arg-type]
                .eq("video_id", video_id)
                .eq("state", "stored")
                .execute()
            )
            await self._raise_progress(db, video_id, progress_for(int(stored.count or 0), current.scene_count))
            await self._touch_run(db, video_id)
            if settles:
                try:
                    await db.table("preview_spend_holds").delete().eq("id", settles).execute()
                except APIError as exc:  # recorded already: the hold ends at its ttl
                    log.warning("could not release a spend hold", extra={"video_id": video_id, "code": exc.code})
            return None if then is not None else await self._read_existing(db, video_id)

        video = await self._run(work)
        if then is not None:
            return await self.update(video_id, then)
        assert video is not None
        return video

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> Video:
        if not self._previews:
            raise FailedPrecondition(PREVIEWS_MISSING)

        async def work(db: AClient) -> Video:
            await self._status(db, video_id)  # NotFound for a video that does not exist
            scenes = db.table("preview_scenes")
            preview = {"preview_url": url, "preview_index": index}
            changed = await scenes.update(preview).eq("video_id", video_id).eq("scene", scene).execute()
            if not changed.data:  # the scene has no row yet: one that only holds its preview
                row = {"video_id": video_id, "scene": scene, "state": SCENE_GENERATING, **preview}
                await scenes.upsert(
                    {**row, "updated_at_ms": now_ms()}, on_conflict="video_id,scene", ignore_duplicates=True
                ).execute()
            await self._touch_run(db, video_id)
            return await self._read_existing(db, video_id)

        return await self._run(work)

    async def list_stalled(self, older_than_ms: int) -> list[Video]:
        async def work(db: AClient) -> list[Video]:
            v = self.videos
            old = await db.table("preview_runs").select("video_id").lt("updated_at_ms", older_than_ms).execute()
            ids = [str(r["video_id"]) for r in _rows(old)]
            if not ids:
                return []
            generating = (
                await db.table(v.table).select(v.id).in_(v.id, ids).eq(v.status, v.column_value(GENERATING)).execute()
            )
            return [await self._read_existing(db, str(r[v.id])) for r in _rows(generating)]

        return await self._run(work)

    async def close(self) -> None:
        await self.supabase.close()


def build(settings: StatusSettings) -> SupabaseStore:
    if not settings.supabase_url or not settings.supabase_service_role_key:
        raise SystemExit("STATUS_STORE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    key = settings.supabase_service_role_key.get_secret_value()
    register_secret(key)
    return SupabaseStore(settings.supabase_url, key, videos_table(settings), settings.attempt_timeout)


def describe(settings: StatusSettings) -> str:
    return f"Supabase ({settings.supabase_url})"
