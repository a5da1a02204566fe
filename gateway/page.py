"""A small page per video: progress bar, each scene's image, which are placeholders; it
follows the video's event stream until the video is done (gateway/video.html).

It is sent with a Content-Security-Policy that lets only its own script and style run (a
nonce per answer), load images only from where they are served, and talk only to this
gateway; and with the usual headers against sniffing, framing and leaking its URL (which
may carry an access token) in a Referer."""

from __future__ import annotations

import html
import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit

PAGE = (Path(__file__).parent / "video.html").read_text()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# How much of each scene's prompt the page shows.
PROMPT_SHOWN = 300


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def video_page(
    video_id: str, image_origin: str, prompts: list[tuple[int, str]] | None = None
) -> tuple[str, dict[str, str]]:
    """The page and its security headers. ``video_id`` is validated by the caller; it is
    escaped here all the same (as are the ``prompts``, the scenes' own words). ``image_origin``:
    where the images are served."""
    nonce = secrets.token_urlsafe(16)
    scenes = [{"scene": n, "prompt": p[:PROMPT_SHOWN]} for n, p in prompts or []]
    text = (
        PAGE.replace("__TITLE__", html.escape(video_id))
        .replace("__VIDEO_ID__", _script_json(video_id))
        .replace("__SCENES__", _script_json(scenes))
        .replace("<script>", f'<script nonce="{nonce}">')
        .replace("<style>", f'<style nonce="{nonce}">')
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            f"img-src 'self' {_origin(image_origin)} data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
    return text, headers
