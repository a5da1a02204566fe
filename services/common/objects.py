"""Where objects live, a rule both storage and the gateway own: object paths and bucket
names (refused before any network call or file write), the layout of scene images and of
public URLs (Supabase's), and atomic writes of local files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

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


def scene_object_path(video_id: str, scene: int, extension: str, key: str) -> str:
    """Where a scene's image is stored: videos/{videoId}/{key}/scene-{n}.{ext}, ``key`` the
    video's unguessable part (ObjectKeys). (Objects stored before keys, at
    videos/{videoId}/images/scene-{n}.{ext}, stay where they are and keep their URLs.)"""
    return object_path(f"videos/{video_id}/{key}/scene-{scene}.{extension}")


def preview_object_path(video_id: str, scene: int, extension: str, key: str) -> str:
    """Where a scene's preview (its latest partial image) is stored, beside its image."""
    return object_path(f"videos/{video_id}/{key}/preview-{scene}.{extension}")


class ObjectKeys:
    """The unguessable part of a video's object paths: a keyed hash of its id (HMAC-SHA256
    with a secret only the gateways and workers hold, 130 bits in base32). The bucket is
    public, as the StoryShort app expects; without the secret no URL can be derived from a
    video id, so object URLs tell nobody which ids exist."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the object key secret must be at least 16 bytes")
        self._secret = secret

    def of(self, video_id: str) -> str:
        digest = hmac.new(self._secret, video_id.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower()[:26]

    @classmethod
    def kept_in(cls, path: Path) -> ObjectKeys:
        """The secret kept in ``path`` (created, random, on first use; every process that
        shares the directory agrees on it: a second creator finds the first one's)."""
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)  # fails if another process made it first: theirs counts
        except FileExistsError:
            pass
        finally:
            staged.unlink(missing_ok=True)
        return cls(path.read_bytes())


PUBLIC_PREFIX = "/storage/v1/object/public"


def resolve_inside(root: Path, bucket: str, path: str) -> Path:
    """root/bucket/path, refusing anything that would land outside root."""
    base = root.resolve()
    target = (base / bucket / path).resolve()
    if not target.is_relative_to(base / bucket):
        raise InvalidArgument("path escapes the bucket")
    return target


def write_atomically(
    target: Path, data: bytes | memoryview, free_later: Callable[[Callable[[], None]], object] | None = None
) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory: a crash
    leaves the old object or the new one, never a torn one. The object replaced is freed
    before returning, or handed to ``free_later`` (an executor's submit) to be freed after
    the caller has answered (see AtomicFile.commit)."""
    staged = AtomicFile(target)
    try:
        staged.write(data)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    if free_later is None:
        staged.release()
    else:
        free_later(staged.release)


class AtomicFile:
    """write_atomically in steps: bytes written to the temp file as they come, and the
    object replaced only by commit(); discard() leaves the old object as it was."""

    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        self._handle = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit() or discard()
        self._synced = False
        self._replaced: int | None = None  # a descriptor of the object commit() replaced

    def write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self._synced = False

    def write_through(self, data: bytes | memoryview) -> None:
        """Write and start sending it to disk now (writeback of these pages begins, without
        waiting), so that the fsync has only the last bytes left: the disk works while the
        rest of the image still arrives."""
        start = self._handle.tell()
        self.write(data)
        self._handle.flush()
        os.posix_fadvise(self._handle.fileno(), start, len(data), os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        """Make the temp file's bytes durable now (fsync), before commit: nothing is
        published by it, so it can run while the image is still being checked."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._synced = True

    def commit(self) -> None:
        """Replace the object. The object replaced is held open across the rename, so the
        rename only unlinks it and freeing its blocks (about a millisecond for 5 MiB on
        ext4) waits for release(), which the caller can run after answering."""
        try:
            if not self._synced:
                self.sync()
            self._handle.close()
            self._hold_replaced()
            os.replace(self.tmp, self.target)
        except BaseException:
            self.release()
            self.discard()
            raise
        try:
            dir_fd = os.open(self.target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            self.release()
            raise

    def _hold_replaced(self) -> None:
        try:  # (O_NONBLOCK: whatever sits at the path, opening it never waits)
            self._replaced = os.open(self.target, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:  # nothing there yet (or unreadable: then it is freed in the rename)
            self._replaced = None

    def release(self) -> None:
        """Free the object that commit() replaced (nothing when there was none)."""
        if self._replaced is not None:
            os.close(self._replaced)
            self._replaced = None

    def discard(self) -> None:
        self._handle.close()
        self.tmp.unlink(missing_ok=True)
