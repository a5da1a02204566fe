"""Scene previews, on every store: a scene being made keeps its latest preview until its
result is reported; a preview is never the scene's image, never moves progress, never
survives the scene's result or the video's next run."""

from __future__ import annotations

import pytest

from services.common.errors import NotFound
from services.status.model import SceneResult, VideoUpdate
from services.status.stores.base import StatusStore


def previews(video: object) -> dict[int, tuple[str, int, str]]:
    return {s.scene: (s.preview_url, s.preview_index, s.state) for s in video.scenes if s.preview_url}  # type: ignore[attr-defined]


async def started(store: StatusStore, video_id: str = "v1", scenes: int = 4) -> None:
    await store.create(video_id, scenes)
    await store.update(video_id, VideoUpdate(status="generating_images", scene_count=scenes))


async def test_a_preview_is_kept_until_the_scenes_result_and_never_moves_progress(store: StatusStore) -> None:
    await started(store)
    after = await store.report_preview("v1", 2, "https://x/p2-0.png", 0)
    assert previews(after) == {2: ("https://x/p2-0.png", 0, "generating")}
    after = await store.report_preview("v1", 2, "https://x/p2-1.png", 1)  # the next partial replaces it
    assert previews(after) == {2: ("https://x/p2-1.png", 1, "generating")}
    assert after.progress == 0 and not [s for s in after.scenes if s.state == "stored"]
    done = await store.report_scene("v1", SceneResult(scene=2, state="stored", url="https://x/final-2.png"))
    assert previews(done) == {}, "the result ends the preview"
    assert done.progress == 25 and [s.url for s in done.scenes if s.state == "stored"] == ["https://x/final-2.png"]


async def test_a_regenerated_scene_keeps_its_image_while_it_has_a_preview(store: StatusStore) -> None:
    await started(store)
    await store.report_scene("v1", SceneResult(scene=1, state="stored", url="https://x/old.png"))
    during = await store.report_preview("v1", 1, "https://x/new-0.png", 0)
    (scene,) = during.scenes
    assert (scene.state, scene.url, scene.preview_url) == ("stored", "https://x/old.png", "https://x/new-0.png")
    # The new attempt fails: the stored image stays, its preview still goes.
    after = await store.report_scene("v1", SceneResult(scene=1, state="failed", error="upload failed"))
    (scene,) = after.scenes
    assert (scene.state, scene.url, scene.preview_url) == ("stored", "https://x/old.png", "")


async def test_the_next_run_starts_without_the_previews_of_the_last(store: StatusStore) -> None:
    await started(store)
    await store.report_scene("v1", SceneResult(scene=1, state="stored", url="https://x/1.png"))
    await store.report_preview("v1", 1, "https://x/p1.png", 0)
    await store.report_preview("v1", 3, "https://x/p3.png", 0)  # a run killed mid-scene left these
    await store.update("v1", VideoUpdate(status="failed"))
    again = await store.update("v1", VideoUpdate(status="generating_images"))
    assert previews(again) == {}
    assert [(s.scene, s.state) for s in again.scenes] == [(1, "stored")], "the preview-only row went"


async def test_a_preview_of_a_video_that_does_not_exist_is_not_found(store: StatusStore) -> None:
    with pytest.raises(NotFound):
        await store.report_preview("nope", 1, "https://x/p.png", 0)
    assert await store.get("nope") is None
