"""The comparison for the status read benchmark: a FastAPI route that reads the same row
from the same SQLite file directly, answering the same JSON (no gRPC hop, no status service)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

DB = os.environ["STATUS_SQLITE_PATH"]
app = FastAPI()
_executor = ThreadPoolExecutor(max_workers=1)
_conn: sqlite3.Connection | None = None


def read(video_id: str) -> dict[str, Any] | None:
    global _conn
    if _conn is None:
        _conn = sqlite3.connect(DB, check_same_thread=False)
    row = _conn.execute(
        "SELECT v.id, v.status, v.image_upload_progress, r.scene_count, r.error FROM videos v "
        "LEFT JOIN preview_runs r ON r.video_id = v.id WHERE v.id = ?",
        (video_id,),
    ).fetchone()
    if row is None:
        return None
    scenes = _conn.execute(
        "SELECT scene, url, placeholder, provider FROM preview_scenes WHERE video_id = ? AND state = 'stored' "
        "ORDER BY scene",
        (video_id,),
    ).fetchall()
    return {
        "videoId": row[0],
        "status": row[1],
        "progress": row[2],
        "degraded": False,
        "sceneCount": row[3],
        "error": row[4],
        "images": [{"scene": s[0], "url": s[1], "placeholder": bool(s[2]), "provider": s[3]} for s in scenes],
    }


@app.get("/api/video-status")
async def video_status(videoId: str = Query(...)) -> JSONResponse:
    body = await asyncio.get_running_loop().run_in_executor(_executor, read, videoId)
    if body is None:
        return JSONResponse({"error": {"code": "NOT_FOUND", "message": "no such video"}}, status_code=404)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
