"""The comparison for the status read benchmark: one process that reads the same video from
the same SQLite file with the status service's own store, and answers the very same JSON
(gateway/answers.py: status_json), the same size, with no gRPC hop and no second process.
What the ratio then measures is the split itself: the hop and the status service."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from gateway.answers import status_json
from services.common.video import video_to_pb
from services.status.stores.sqlite import SQLiteStore
from storyshort.status.v1 import status_pb2

STORE = SQLiteStore(Path(os.environ["STATUS_SQLITE_PATH"]))
ORIGIN = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8080")
app = FastAPI()


@app.get("/api/video-status")
async def video_status(videoId: str = Query(...)) -> JSONResponse:
    video = await STORE.get(videoId)
    if video is None:
        return JSONResponse({"error": {"code": "NOT_FOUND", "message": "no such video"}}, status_code=404)
    answer = status_pb2.GetVideoResponse(video=video_to_pb(video))
    return JSONResponse(status_json(answer, ORIGIN), headers={"Cache-Control": "no-store"})
