"""Object paths and bucket names, refused before any network call or file write."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument
from services.common.images import FORMATS

PATH_MAX = 512
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
EXTENSIONS: dict[str, set[str]] = {mime: {ext} for mime, ext in FORMATS.values()}
EXTENSIONS["image/jpeg"].add("jpeg")


def object_path(path: str) -> str:
    if not path:
        raise InvalidArgument("path is required, for example 'videos/<videoId>/images/scene-1.png'")
    if len(path) > PATH_MAX:
        raise InvalidArgument(f"path is {len(path)} characters; at most {PATH_MAX} are allowed")
    if path.startswith("/") or "\\" in path:
        raise InvalidArgument("path must be relative and use '/' separators")
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidArgument("path must not contain empty segments, '.' or '..'")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidArgument(
                f"path segment {segment!r} may contain only letters, digits, '.', '-' and '_', "
                "and must start with a letter or digit"
            )
    return path


def bucket_name(value: str) -> str:
    if not _BUCKET.fullmatch(value):
        raise InvalidArgument(
            f"bucket {value!r} is not a valid name (2-63 of lowercase letters, digits, '.', '-', '_')"
        )
    return value


def check_extension(path: str, content_type: str) -> None:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    allowed = EXTENSIONS.get(content_type, set())
    if ext not in allowed:
        raise InvalidArgument(
            f"path extension '.{ext}' does not match the content type {content_type} "
            f"(use .{' or .'.join(sorted(allowed))})"
        )
