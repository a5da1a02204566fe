"""Checks at the edge, shared by the gateway and every RPC. Each raises InvalidArgument
(or TooLarge) with a message that names the rule."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

VIDEO_ID_MAX = 128
PROMPT_MAX = 32_000
# The highest scene number anywhere: a video's scenes are 1..SCENE_MAX.
SCENE_MAX = 10_000
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]+")
# Any digits (up to 9, so int() stays cheap) parse, and the range check names the rule.
_SIZE = re.compile(r"(\d{1,9})x(\d{1,9})")
SIZE_MIN, SIZE_MAX = 64, 4096


def video_id(value: str, name: str = "video_id") -> str:
    """``name`` is the field as the caller knows it (videoId over HTTP, video_id over gRPC)."""
    if not value:
        raise InvalidArgument(f"{name} is required", field=name, reason="VIDEO_ID_MISSING")
    if len(value) > VIDEO_ID_MAX:
        raise InvalidArgument(
            f"{name} is {len(value)} characters; at most {VIDEO_ID_MAX} are allowed",
            field=name,
            reason="VIDEO_ID_TOO_LONG",
        )
    if not _VIDEO_ID.fullmatch(value):
        raise InvalidArgument(
            f"{name} may contain only letters, digits, '-' and '_' (no '/', '..', spaces or control characters)",
            field=name,
            reason="VIDEO_ID_INVALID",
        )
    return value


def scene_number(value: int, name: str = "scene") -> int:
    """A 1-based scene number within the one bound every edge checks (the gateway before
    anything is paid, and every RPC that takes a scene)."""
    if not 1 <= value <= SCENE_MAX:
        raise InvalidArgument(
            f"{name} must be a 1-based scene number from 1 to {SCENE_MAX}; got {value}",
            field=name,
            reason="SCENE_INVALID",
        )
    return value


def prompt(value: str) -> str:
    if not value.strip():
        raise InvalidArgument("prompt is empty; give the scene's image prompt", field="prompt", reason="PROMPT_EMPTY")
    if len(value) > PROMPT_MAX:
        raise InvalidArgument(
            f"prompt is {len(value)} characters; at most {PROMPT_MAX} are allowed",
            field="prompt",
            reason="PROMPT_TOO_LONG",
        )
    if any(ord(c) < 32 and c not in "\n\r\t" for c in value):
        raise InvalidArgument("prompt contains control characters", field="prompt", reason="PROMPT_INVALID")
    return value


def image_size(value: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' with each side in 64..4096."""
    match = _SIZE.fullmatch(value)
    if not match:
        raise InvalidArgument(
            f"size {value!r} is not WIDTHxHEIGHT, for example '1024x1024'", field="size", reason="SIZE_INVALID"
        )
    width, height = int(match.group(1)), int(match.group(2))
    if not (SIZE_MIN <= width <= SIZE_MAX and SIZE_MIN <= height <= SIZE_MAX):
        raise InvalidArgument(
            f"size {value!r}: each side must be between {SIZE_MIN} and {SIZE_MAX} pixels",
            field="size",
            reason="SIZE_OUT_OF_RANGE",
        )
    return width, height
