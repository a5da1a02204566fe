"""The embedded default store: one SQLite file, one connection, one worker thread.

sqlite3 blocks, so every call runs on a single dedicated thread (bounded, and serialised,
which also makes each read-check-write below atomic).

(Over 300 lines: one store, every statement beside the rule it enforces, as in the
PostgreSQL store.)"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.common.config import StatusSettings
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
    decide_hold,
    now_ms,
    progress_for,
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

T = TypeVar("T")

_SELECT_VIDEO = f"""
SELECT v.id, v.status, v.image_upload_progress AS progress, {RUN_SELECT}, COALESCE(r.owner, '') AS owner
FROM videos v LEFT JOIN preview_runs r ON r.video_id = v.id
WHERE v.id = ?
"""


class SQLiteStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
                self._conn.row_factory = sqlite3.Row
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                result = work(self._conn)
                self._conn.execute("COMMIT")
                return result
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def migrate(self) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at_ms INTEGER)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migrations("sqlite"):
                if version in done:
                    continue
                code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
                for statement in (s.strip() for s in code.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now_ms()))

        await self._run(apply)

    @staticmethod
    def _read(conn: sqlite3.Connection, video_id: str) -> Video | None:
        row = conn.execute(_SELECT_VIDEO, (video_id,)).fetchone()
        if row is None:
            return None
        scenes = [
            scene_from_row(tuple(r))
            for r in conn.execute(
                f"SELECT {', '.join(SCENE_COLUMNS)} FROM preview_scenes WHERE video_id = ? ORDER BY scene",
                (video_id,),
            )
        ]
        return video_from_row(row, scenes)

    def _read_existing(self, conn: sqlite3.Connection, video_id: str) -> Video:
        video = self._read(conn, video_id)
        if video is None:
            raise NotFound(f"video {video_id!r} does not exist")
        return video

    @staticmethod
    def _ensure_run_row(conn: sqlite3.Connection, video_id: str) -> None:
        conn.execute("INSERT OR IGNORE INTO preview_runs (video_id, updated_at_ms) VALUES (?, ?)", (video_id, now_ms()))

    async def create(self, video_id: str, scene_count: int, owner: str = "") -> Video:
        def work(conn: sqlite3.Connection) -> Video:
            conn.execute("INSERT OR IGNORE INTO videos (id) VALUES (?)", (video_id,))
            conn.execute(
                "INSERT OR IGNORE INTO preview_runs (video_id, scene_count, updated_at_ms) VALUES (?, ?, ?)",
                (video_id, scene_count, now_ms()),
            )
            if owner:  # the first owner named keeps the video
                conn.execute("UPDATE preview_runs SET owner = ? WHERE video_id = ? AND owner = ''", (owner, video_id))
            return self._read_existing(conn, video_id)

        return await self._run(work)

    async def record_start(self, owner: str, video_id: str, scenes: int, limits: UserLimits) -> None:
        def work(conn: sqlite3.Connection) -> None:
            now = now_ms()
            conn.execute("DELETE FROM preview_user_starts WHERE owner = ? AND at_ms <= ?", (owner, now - DAY_MS))
            starts = conn.execute("SELECT at_ms, scenes FROM preview_user_starts WHERE owner = ?", (owner,)).fetchall()
            check_limits([(int(a), int(n)) for a, n in starts], scenes, limits, now)
            conn.execute(
                "INSERT INTO preview_user_starts (owner, video_id, scenes, at_ms) VALUES (?, ?, ?, ?)",
                (owner, video_id, scenes, now),
            )

        await self._run(work)

    async def get(self, video_id: str) -> Video | None:
        return await self._run(lambda conn: self._read(conn, video_id))

    async def update(self, video_id: str, change: VideoUpdate) -> Video:
        return await self._run(lambda conn: self._update(conn, video_id, change))

    def _update(self, conn: sqlite3.Connection, video_id: str, change: VideoUpdate) -> Video:
        """The change applied (FailedPrecondition, nothing written, for a refused status)."""
        row = conn.execute("SELECT status FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None:
            raise NotFound(f"video {video_id!r} does not exist")
        current = VideosTable().status_of(row[0])
        if change.status is not None:
            check_transition(current, change.status)
            conn.execute("UPDATE videos SET status = ? WHERE id = ?", (change.status, video_id))
        if change.progress is not None:
            conn.execute(
                "UPDATE videos SET image_upload_progress = MAX(image_upload_progress, ?) WHERE id = ?",
                (change.progress, video_id),
            )
        self._ensure_run_row(conn, video_id)
        if change.status == GENERATING:  # a run starts: the previews of an earlier one go
            for clear in CLEAR_PREVIEWS:
                conn.execute(clear, (video_id,))
        resumed = change.status == GENERATING and current != GENERATING
        columns = {"updated_at_ms": now_ms(), **run_columns(change, resumed)}
        sets = ", ".join(f"{name} = ?" for name in columns)  # names are ours, values bound
        conn.execute(f"UPDATE preview_runs SET {sets} WHERE video_id = ?", (*columns.values(), video_id))
        return self._read_existing(conn, video_id)

    @staticmethod
    def _scene_count(conn: sqlite3.Connection, video_id: str) -> int:
        row = conn.execute(
            "SELECT r.scene_count FROM videos v LEFT JOIN preview_runs r ON r.video_id = v.id WHERE v.id = ?",
            (video_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"video {video_id!r} does not exist")
        return int(row[0] or 0)

    async def report_scene(
        self, video_id: str, scene: SceneResult, settles: str = "", then: VideoUpdate | None = None
    ) -> Video:
        def work(conn: sqlite3.Connection) -> tuple[Video, FailedPrecondition | None]:
            scene_count = self._scene_count(conn, video_id)
            values = [getattr(scene, c) for c in SCENE_COLUMNS]
            placeholders = ", ".join("?" for _ in SCENE_COLUMNS)
            updates = ", ".join(f"{c} = excluded.{c}" for c in SCENE_COLUMNS if c != "scene")
            # A stored image is never replaced by a later failure of the same scene.
            conn.execute(
                f"INSERT INTO preview_scenes (video_id, {', '.join(SCENE_COLUMNS)}, updated_at_ms) "
                f"VALUES (?, {placeholders}, ?) "
                f"ON CONFLICT (video_id, scene) DO UPDATE SET {updates}, updated_at_ms = excluded.updated_at_ms "
                "WHERE NOT (preview_scenes.state = 'stored' AND excluded.state = 'failed')",
                (video_id, *values, now_ms()),
            )
            conn.execute(DROP_PREVIEW, (video_id, scene.scene))
            stored = conn.execute(
                "SELECT COUNT(*) FROM preview_scenes WHERE video_id = ? AND state = 'stored'", (video_id,)
            ).fetchone()[0]
            conn.execute(
                "UPDATE videos SET image_upload_progress = MAX(image_upload_progress, ?) WHERE id = ?",
                (progress_for(stored, scene_count), video_id),
            )
            self._ensure_run_row(conn, video_id)
            conn.execute("UPDATE preview_runs SET updated_at_ms = ? WHERE video_id = ?", (now_ms(), video_id))
            if settles:  # the cost is in: its hold goes in the same transaction
                conn.execute("DELETE FROM preview_spend_holds WHERE id = ?", (settles,))
            if then is not None:  # the run's end, in the same transaction
                try:
                    return self._update(conn, video_id, then), None
                except FailedPrecondition as refused:  # the scene is kept all the same
                    return self._read_existing(conn, video_id), refused
            return self._read_existing(conn, video_id), None

        video, refused = await self._run(work)
        if refused is not None:
            raise refused
        return video

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> Video:
        def work(conn: sqlite3.Connection) -> Video:
            self._scene_count(conn, video_id)  # NotFound for a video that does not exist
            now = now_ms()
            conn.execute(
                "INSERT INTO preview_scenes (video_id, scene, state, preview_url, preview_index, updated_at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (video_id, scene) DO UPDATE SET "
                "preview_url = excluded.preview_url, preview_index = excluded.preview_index",
                (video_id, scene, SCENE_GENERATING, url, index, now),
            )
            conn.execute("UPDATE preview_runs SET updated_at_ms = ? WHERE video_id = ?", (now, video_id))
            return self._read_existing(conn, video_id)

        return await self._run(work)

    async def list_stalled(self, older_than_ms: int) -> list[Video]:
        def work(conn: sqlite3.Connection) -> list[Video]:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT v.id FROM videos v JOIN preview_runs r ON r.video_id = v.id "
                    "WHERE v.status = ? AND r.updated_at_ms < ? ORDER BY r.updated_at_ms",
                    (GENERATING, older_than_ms),
                )
            ]
            return [self._read_existing(conn, i) for i in ids]

        return await self._run(work)

    async def spend_since(self, since_ms: int, owner: str = "") -> Spend:
        def work(conn: sqlite3.Connection) -> Spend:
            mine = " AND video_id IN (SELECT video_id FROM preview_runs WHERE owner = ?)" if owner else ""
            usd, unpriced = conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(CASE WHEN cost_known = 0 THEN 1 ELSE 0 END), 0) "
                "FROM preview_scenes WHERE paid_at_ms >= ?" + mine,
                (since_ms, owner) if owner else (since_ms,),
            ).fetchone()
            return Spend(float(usd), int(unpriced))

        return await self._run(work)

    async def reserve_spend(self, request: HoldRequest) -> Hold:
        def work(conn: sqlite3.Connection) -> Hold:
            # BEGIN IMMEDIATE (in _run) holds the write lock from the reads to the insert.
            now = now_ms()
            rid, video, owner, since = request.reservation_id, request.video_id, request.owner, request.caps.since_ms
            conn.execute("DELETE FROM preview_spend_holds WHERE expires_at_ms <= ?", (now,))

            def total(query: str, *args: object) -> float:
                return float(conn.execute(query, args).fetchone()[0])

            mine = "video_id IN (SELECT video_id FROM preview_runs WHERE owner = ?)"
            paid = "SELECT COALESCE(SUM(cost_usd), 0) FROM preview_scenes WHERE "
            holds = "SELECT COALESCE(SUM(usd), 0) FROM preview_spend_holds WHERE id <> ? AND "
            spent = {
                "daily": total(paid + "paid_at_ms >= ?", since),
                "video": total(paid + "video_id = ?", video),
                "owner": total(paid + "paid_at_ms >= ? AND " + mine, since, owner),
            }
            held = {
                "daily": total(holds + "1", rid),
                "video": total(holds + "video_id = ?", rid, video),
                "owner": total(holds + "owner = ?", rid, owner),
            }
            hold = decide_hold(request, spent, held)
            existing = conn.execute("SELECT usd FROM preview_spend_holds WHERE id = ?", (rid,)).fetchone()
            if existing is not None:
                return Hold(rid, float(existing[0]), hold.rooms)
            if hold.granted_usd > 0:
                conn.execute(
                    "INSERT INTO preview_spend_holds (id, video_id, owner, usd, expires_at_ms) VALUES (?, ?, ?, ?, ?)",
                    (rid, video, owner, hold.granted_usd, now + request.ttl_ms),
                )
            return hold

        return await self._run(work)

    async def release_spend(self, reservation_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM preview_spend_holds WHERE id = ?", (reservation_id,)).rowcount > 0

        return await self._run(work)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


def build(settings: StatusSettings) -> SQLiteStore:
    return SQLiteStore(settings.sqlite_file)


def describe(settings: StatusSettings) -> str:
    return f"SQLite ({settings.sqlite_file})"
