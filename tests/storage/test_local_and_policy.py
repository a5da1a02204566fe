"""The local backend's atomic writes and path safety, and the storage policy SQL against
the real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument, ServiceError
from services.common.objects import AtomicFile, resolve_inside
from services.status.migrate import apply_storage_policy
from services.storage.backends.local import LocalBackend
from services.storage.uploader import Uploader
from tests.fakes.images import image_bytes, noisy_png

BUCKET = "renders-images"


def open_at(target: Path, deleted: bool = False) -> list[str]:
    """This process's open descriptors of the file at ``target`` (``deleted``: of one that
    was there and has been replaced)."""
    name = f"{target} (deleted)" if deleted else str(target)
    return [str(link) for link in Path("/proc/self/fd").iterdir() if os.path.realpath(link) == name]


def held_replaced(target: Path) -> list[str]:
    return open_at(target, deleted=True)


async def test_local_upload_writes_the_file_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), BUCKET)
    data = image_bytes("JPEG")
    result = await uploader.upload("", "videos/v/images/scene-2.jpg", data, "image/jpeg", Deadline.of(5))
    target = tmp_path / BUCKET / "videos/v/images/scene-2.jpg"
    assert target.read_bytes() == data
    assert result.public_url.startswith(
        "http://gw/storage/v1/object/public/renders-images/videos/v/images/scene-2.jpg?v="
    )
    assert [p.name for p in target.parent.iterdir()] == ["scene-2.jpg"]


async def test_a_write_that_dies_before_the_rename_keeps_the_old_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), BUCKET)
    old = image_bytes("PNG", color=(1, 1, 1))
    await uploader.upload("", "videos/v/images/scene-1.png", old, "image/png", Deadline.of(5))

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ServiceError):
        await uploader.upload("", "videos/v/images/scene-1.png", image_bytes("PNG"), "image/png", Deadline.of(2))
    target = tmp_path / BUCKET / "videos/v/images/scene-1.png"
    assert target.read_bytes() == old
    assert [p.name for p in target.parent.iterdir()] == ["scene-1.png"]
    assert open_at(target) == []  # the old object is not left held open


def test_a_replaced_object_is_freed_by_release_not_by_the_rename(tmp_path: Path) -> None:
    """The rename only unlinks the old object (held open); release() frees it, and a first
    write (nothing replaced) holds nothing."""
    target = tmp_path / "b" / "scene-1.png"
    first = AtomicFile(target)
    first.write(b"old bytes")
    first.commit()
    assert held_replaced(target) == [] and first._replaced is None
    first.release()
    second = AtomicFile(target)
    second.write_through(b"new bytes")
    second.commit()
    assert target.read_bytes() == b"new bytes"
    assert len(held_replaced(target)) == 1  # the old one, unlinked but not yet freed
    second.release()
    assert held_replaced(target) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["scene-1.png"]


async def test_uploads_that_replace_objects_free_them_after_answering(tmp_path: Path) -> None:
    """Unary and streamed uploads over the same paths: each replaced object is freed by the
    backend's freer thread, none is left held once it has run."""
    backend = LocalBackend(tmp_path, "http://gw")
    uploader = Uploader(backend, BUCKET)
    images = [noisy_png(300_000) for _ in range(4)]  # streamed ones are staged (above 256 KiB)

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    for round_ in range(3):
        for n, data in enumerate(images):
            path = f"videos/v/images/scene-{n}.png"
            if (round_ + n) % 2:
                await uploader.upload("", path, data, "image/png", Deadline.of(5))
            else:
                await uploader.receive("", path, "image/png", len(data), chunks(data), Deadline.of(5))
    await backend.close()  # waits for the freer
    folder = tmp_path / BUCKET / "videos/v/images"
    assert all((folder / f"scene-{n}.png").read_bytes() == data for n, data in enumerate(images))
    assert all(held_replaced(folder / f"scene-{n}.png") == [] for n in range(4))
    assert sorted(p.name for p in folder.iterdir()) == [f"scene-{n}.png" for n in range(4)]


@pytest.mark.parametrize("path", ["../x.png", "a/../../x.png"])
def test_paths_that_escape_the_bucket_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve_inside(tmp_path, BUCKET, path)


def test_a_symlink_out_of_the_bucket_is_refused(tmp_path: Path) -> None:
    (tmp_path / BUCKET).mkdir()
    os.symlink("/etc", tmp_path / BUCKET / "videos")
    with pytest.raises(InvalidArgument):
        resolve_inside(tmp_path, BUCKET, "videos/passwd")


MINIMAL_STORAGE_SCHEMA = """
CREATE SCHEMA storage;
CREATE TABLE storage.buckets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, public BOOLEAN DEFAULT FALSE,
    file_size_limit BIGINT, allowed_mime_types TEXT[]
);
CREATE TABLE storage.objects (id UUID DEFAULT gen_random_uuid(), bucket_id TEXT, name TEXT);
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
"""


async def test_storage_policy_sql_runs_twice_and_makes_a_public_bucket_with_a_read_policy(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(MINIMAL_STORAGE_SCHEMA)
        conn.execute(
            "INSERT INTO storage.buckets (id, name, public) VALUES ('renders-images', 'renders-images', FALSE)"
        )
    await apply_storage_policy(pg_dsn, BUCKET)
    await apply_storage_policy(pg_dsn, BUCKET)
    await apply_storage_policy(pg_dsn, "other-bucket")
    with psycopg.connect(pg_dsn) as conn:
        buckets = conn.execute("SELECT id, public FROM storage.buckets ORDER BY id").fetchall()
        policies = conn.execute(
            "SELECT policyname, cmd, qual FROM pg_policies WHERE schemaname = 'storage' ORDER BY policyname"
        ).fetchall()
    assert buckets == [("other-bucket", True), ("renders-images", True)]
    assert [(p[0], p[1]) for p in policies] == [
        ("Public read other-bucket", "SELECT"),
        ("Public read renders-images", "SELECT"),
    ]
    assert "renders-images" in policies[1][2]
