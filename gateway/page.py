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


def video_page(video_id: str, image_origin: str) -> tuple[str, dict[str, str]]:
    """The page and its security headers. ``video_id`` is validated by the caller; it is
    escaped here all the same. ``image_origin``: where the images are served."""
    nonce = secrets.token_urlsafe(16)
    text = (
        PAGE.replace("__TITLE__", html.escape(video_id))
        .replace("__VIDEO_ID__", json.dumps(video_id).replace("<", "\\u003c"))
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
