"""A small page per video: progress bar, each scene's image, which are placeholders;
it refreshes itself from /api/video-status until the video is done (gateway/video.html)."""

from __future__ import annotations

import html
import json
from pathlib import Path

PAGE = (Path(__file__).parent / "video.html").read_text()


def video_page(video_id: str) -> str:
    """``video_id`` is validated by the caller; it is escaped here all the same."""
    return PAGE.replace("__TITLE__", html.escape(video_id)).replace(
        "__VIDEO_ID__", json.dumps(video_id).replace("<", "\\u003c")
    )
