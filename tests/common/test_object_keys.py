"""Object paths with an unguessable part: a keyed hash of the video id that no one without
the secret can compute, the same in every process that shares it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from services.common.objects import ObjectKeys, object_path, scene_object_path


def test_a_key_depends_on_the_secret_and_the_video_and_is_a_valid_path_segment() -> None:
    keys = ObjectKeys(b"0123456789abcdef-secret")
    a, b = keys.of("video-a"), keys.of("video-b")
    assert a != b and a == keys.of("video-a")
    assert a != ObjectKeys(b"0123456789abcdef-other").of("video-a")
    assert len(a) == 26 and a.isalnum()
    path = scene_object_path("video-a", 3, "png", a)
    assert path == f"videos/video-a/{a}/scene-3.png" and object_path(path) == path
    with pytest.raises(ValueError, match="at least 16 bytes"):
        ObjectKeys(b"short")


def _key_from(path: str, queue: multiprocessing.Queue) -> None:
    queue.put(ObjectKeys.kept_in(Path(path)).of("v"))


def test_processes_sharing_a_data_directory_agree_on_the_kept_secret(tmp_path: Path) -> None:
    """Eight processes create it at once: one secret wins, and all of them use it."""
    target = tmp_path / "data" / "object-key"
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = context.Queue()
    workers = [context.Process(target=_key_from, args=(str(target), queue)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    keys = {queue.get(timeout=10) for _ in workers}
    assert len(keys) == 1 and keys == {ObjectKeys.kept_in(target).of("v")}
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["object-key"], "no staged file left behind"
