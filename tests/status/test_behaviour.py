"""One behaviour suite, run against every store."""

from __future__ import annotations

import asyncio
import random
from dataclasses import fields, is_dataclass
from typing import Any

import pytest

from services.common import video
from services.common.deadlines import Deadline
from services.common.errors import FailedPrecondition, NotFound
from services.common.summary import RunSummary
from services.common.video import summary_from_json
from services.status.book import StatusBook
from services.status.model import SceneResult, VideoUpdate
from services.status.stores.base import StatusStore
from services.status.stores.supabase import SupabaseStore
from tests.conftest import eventually
from tests.fakes.supabase_fake import FakeSupabase


def deadline() -> Deadline:
    return Deadline.of(10)


async def test_create_is_idempotent_and_get_reads_it_back(store: StatusStore) -> None:
    first = await store.create("v1", 4)
    again = await store.create("v1", 9)
    assert (first.status, first.progress, first.scene_count) == ("draft", 0, 4)
    assert again.scene_count == 4
    got = await store.get("v1")
    assert got is not None and got.video_id == "v1"
    assert await store.get("nope") is None


async def test_update_is_partial(store: StatusStore) -> None:
    await store.create("v1", 4)
    await store.update("v1", VideoUpdate(status="generating_images"))
    after = await store.update("v1", VideoUpdate(progress=25))
    assert (after.status, after.progress, after.scene_count) == ("generating_images", 25, 4)
    after = await store.update("v1", VideoUpdate(summary=RunSummary(generated=3, elapsed_ms=900)))
    assert (after.status, after.progress, after.summary.generated, after.summary.elapsed_ms) == (
        "generating_images",
        25,
        3,
        900,
    )


def _sample(name: str) -> Any:
    """A value of a video field's declared type that is not its default."""
    kind = video.FIELD_TYPES[name]
    if is_dataclass(kind):
        return kind(**{f.name: (2.5 if f.type in (float, "float") else 3) for f in fields(kind)})
    return {str: f"the {name}", int: 7, float: 2.5, bool: True}[kind]


async def test_every_field_updatevideo_may_set_is_kept_and_read_back(store: StatusStore) -> None:
    """Driven by the video's one definition: a field added there is covered here, in each store."""
    await store.create("v1", 4)
    values = {name: _sample(name) for name in video.CHECKS if name in video.RUN_FIELDS}
    assert values  # scene_count, error, summary at least
    after = await store.update("v1", VideoUpdate(**values))
    got = await store.get("v1")
    assert got is not None
    assert {n: getattr(after, n) for n in values} == {n: getattr(got, n) for n in values} == values
    # A later update that names none of them leaves them as they are.
    await store.update("v1", VideoUpdate(progress=50))
    got = await store.get("v1")
    assert got is not None and {n: getattr(got, n) for n in values} == values


async def test_progress_never_goes_backwards(store: StatusStore) -> None:
    await store.create("v1", 4)
    await store.update("v1", VideoUpdate(progress=60))
    after = await store.update("v1", VideoUpdate(progress=40))
    assert after.progress == 60


async def test_fifty_concurrent_out_of_order_progress_updates_end_at_the_maximum(store: StatusStore) -> None:
    await store.create("v1", 50)
    values = list(range(1, 51))
    random.Random(7).shuffle(values)
    await asyncio.gather(*(store.update("v1", VideoUpdate(progress=p * 2)) for p in values))
    final = await store.get("v1")
    assert final is not None and final.progress == 100


async def test_status_follows_the_state_machine(store: StatusStore) -> None:
    await store.create("v1", 1)
    with pytest.raises(FailedPrecondition, match="cannot move to 'assets_generated'"):
        await store.update("v1", VideoUpdate(status="assets_generated"))
    assert (await store.get("v1")).status == "draft"  # type: ignore[union-attr]
    await store.update("v1", VideoUpdate(status="generating_images"))
    await store.update("v1", VideoUpdate(status="generating_images"))  # repeating is harmless
    await store.update("v1", VideoUpdate(status="failed", error="storage down"))
    resumed = await store.update("v1", VideoUpdate(status="generating_images"))
    assert resumed.error == ""
    done = await store.update("v1", VideoUpdate(status="assets_generated"))
    assert done.status == "assets_generated"


async def test_update_of_an_unknown_video_is_not_found(store: StatusStore) -> None:
    with pytest.raises(NotFound):
        await store.update("ghost", VideoUpdate(progress=10))


def stored(n: int) -> SceneResult:
    return SceneResult(
        scene=n,
        state="stored",
        url=f"http://x/scene-{n}.png",
        path=f"p/{n}.png",
        content_type="image/png",
        provider="gpt-image-2",
        attempts=1,
        generate_ms=10,
        upload_ms=5,
    )


async def test_scene_reports_raise_progress_and_a_failure_never_replaces_a_stored_image(store: StatusStore) -> None:
    await store.create("v1", 4)
    after = await store.report_scene("v1", stored(2))
    assert after.progress == 25
    after = await store.report_scene("v1", SceneResult(scene=2, state="failed", error="late failure"))
    assert [(s.scene, s.state, s.url) for s in after.scenes] == [(2, "stored", "http://x/scene-2.png")]
    after = await store.report_scene("v1", SceneResult(scene=3, state="failed", error="upload failed"))
    assert [(s.scene, s.state) for s in after.scenes] == [(2, "stored"), (3, "failed")]
    assert after.progress == 25
    after = await store.report_scene("v1", stored(3))
    assert [(s.scene, s.state) for s in after.scenes] == [(2, "stored"), (3, "stored")]
    assert after.progress == 50
    scene = after.scenes[0]
    assert (scene.provider, scene.content_type, scene.attempts, scene.placeholder) == (
        "gpt-image-2",
        "image/png",
        1,
        False,
    )


async def test_the_last_scene_carries_the_run_end_and_answers_the_video_done(store: StatusStore) -> None:
    await store.create("v1", 2)
    await store.update("v1", VideoUpdate(status="generating_images"))
    await store.report_scene("v1", stored(1))
    end = VideoUpdate(status="assets_generated", progress=100, summary=RunSummary(generated=2, elapsed_ms=700))
    done = await store.report_scene("v1", stored(2), then=end)
    assert (done.status, done.progress, done.summary.generated) == ("assets_generated", 100, 2)
    assert [(s.scene, s.state) for s in done.scenes] == [(1, "stored"), (2, "stored")]
    assert await store.get("v1") == done


async def test_a_run_end_the_status_refuses_keeps_the_scene_it_came_with(store: StatusStore) -> None:
    """A draft cannot move to done: the end is refused (FailedPrecondition), nothing of it
    written, and the scene reported with it is recorded all the same."""
    await store.create("v1", 1)
    end = VideoUpdate(status="assets_generated", progress=100, summary=RunSummary(generated=1))
    with pytest.raises(FailedPrecondition, match="cannot move"):
        await store.report_scene("v1", stored(1), then=end)
    after = await store.get("v1")
    assert after is not None and (after.status, after.summary.generated) == ("draft", 0)
    assert [(s.scene, s.state) for s in after.scenes] == [(1, "stored")]
    assert after.progress == 100  # from the stored scene, not from the refused end


class Answers:
    """A store whose writes' answers (the video as each write left it) are kept in order."""

    def __init__(self, store: StatusStore) -> None:
        self.store = store
        self.seen: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in ("create", "update", "report_scene"):
            return attr

        async def write(*args: Any, **kwargs: Any) -> Any:
            video = await attr(*args, **kwargs)
            self.seen.append((video.status, video.progress))
            return video

        return write


async def test_no_write_leaves_a_run_with_every_scene_in_still_generating(store: StatusStore) -> None:
    """The book hands a run's end to the store with its last scene: no write answers (nor
    leaves for a reader) the video at 100% and still generating."""
    written = Answers(store)
    book = StatusBook(written)
    await book.start("v1", 2, deadline())
    await book.report_scene("v1", stored(1), deadline())
    end = VideoUpdate(status="assets_generated", progress=100, summary=RunSummary(generated=2))
    done = await book.report_scene("v1", stored(2), deadline(), then=end)
    assert (done.status, done.progress) == ("assets_generated", 100)
    assert ("generating_images", 100) not in written.seen, written.seen
    assert written.seen[-2:] == [("generating_images", 50), ("assets_generated", 100)]


async def test_concurrent_scene_reports_end_at_one_hundred(store: StatusStore) -> None:
    await store.create("v1", 12)
    await store.update("v1", VideoUpdate(status="generating_images"))
    order = list(range(1, 13))
    random.Random(3).shuffle(order)
    await asyncio.gather(*(store.report_scene("v1", stored(n)) for n in order))
    final = await store.get("v1")
    assert final is not None and final.progress == 100
    assert [s.scene for s in final.scenes] == list(range(1, 13))


async def test_a_video_at_one_hundred_still_generating_is_corrected_on_read(store: StatusStore) -> None:
    # The window is set on the book between the reads, so no clock decides the first one
    # (a 50 ms window once let a slow store's writes outlast it on a busy machine).
    book = StatusBook(store, recover_after=3600)
    await store.create("v1", 2)
    await store.update("v1", VideoUpdate(status="generating_images"))
    await store.report_scene("v1", stored(1))
    await store.report_scene("v1", stored(2))
    fresh = await book.get("v1", deadline())
    assert fresh.video.status == "generating_images"  # its run may still be writing its summary
    book.recover_after_ms = 0  # its run had its time: a read corrects it (the store's clock may be a ms ahead)
    for _ in range(200):
        answer = await book.get("v1", deadline())
        if answer.video.status != "generating_images":
            break
        await asyncio.sleep(0.01)
    assert answer.video.status == "assets_generated" and not answer.degraded
    assert (await store.get("v1")).status == "assets_generated"  # type: ignore[union-attr]


async def test_a_generating_video_without_updates_is_reported_stalled_and_listed(store: StatusStore) -> None:
    book = StatusBook(store, stall_after=0.05)
    await store.create("v1", 2)
    await store.create("v2", 2)
    await store.update("v1", VideoUpdate(status="generating_images"))
    for _ in range(200):
        answer = await book.get("v1", deadline())
        if answer.stalled:
            break
        await asyncio.sleep(0.01)
    assert answer.stalled
    assert not (await book.get("v2", deadline())).stalled  # draft is never stalled
    assert [v.video_id for v in await book.list_stalled(deadline())] == ["v1"]


async def test_get_of_an_unknown_video_is_not_found_not_degraded(store: StatusStore) -> None:
    with pytest.raises(NotFound):
        await StatusBook(store).get("never", deadline())


async def test_a_runs_prompts_are_kept_so_a_stalled_video_can_be_resumed_without_them(store: StatusStore) -> None:
    book = StatusBook(store, stall_after=0.001)
    prompts = {1: "a fox in the snow", 2: 'a lighthouse at dusk, "quoted" and ünïcode'}
    started = await book.start("v1", 2, deadline(), prompts)
    assert started.prompts == prompts

    async def listed() -> bool:  # once it is older than the stall threshold (1 ms)
        return bool(await book.list_stalled(deadline()))

    assert await eventually(listed, timeout=5)
    stalled = await book.list_stalled(deadline())
    assert [(v.video_id, v.prompts) for v in stalled] == [("v1", prompts)]
    again = await book.start("v1", 2, deadline())  # a start without prompts keeps the stored ones
    assert again.prompts == prompts
    edited = await book.start("v1", 2, deadline(), {1: "a fox at dawn", 2: prompts[2]})
    assert edited.prompts[1] == "a fox at dawn"


async def test_spend_since_sums_what_was_paid_from_that_moment_and_counts_unpriced_images(store: StatusStore) -> None:
    await store.create("v1", 4)
    paid = [(1, 0.04, True, 1_000), (2, 0.04, True, 5_000), (3, 0.0, False, 6_000), (4, 0.0, True, 0)]
    for scene, usd, known, at in paid:
        result = SceneResult(scene, "stored", url="u", cost_usd=usd, cost_known=known, paid_at_ms=at)
        await store.report_scene("v1", result)
    since = await store.spend_since(2_000)  # scenes 2 and 3 were paid after it; 4 cost nothing
    assert since.usd == pytest.approx(0.04) and since.unpriced_images == 1
    everything = await store.spend_since(0)
    assert everything.usd == pytest.approx(0.08)


async def test_a_run_end_on_supabase_is_visible_only_with_its_summary(fake_supabase: FakeSupabase) -> None:
    """PostgREST has no transaction across requests: the store writes a run's summary and
    error before its final status, so every moment at which the final status can be read
    already has them (CI once saw a video done with an empty summary)."""
    store = SupabaseStore(fake_supabase.url, fake_supabase.key, timeout=5)
    await store.migrate()
    try:
        await store.create("v1", 2)
        await store.update("v1", VideoUpdate(status="generating_images"))
        seen: list[tuple[str, str | None]] = []

        def status_written(row: dict[str, object]) -> None:  # runs inside the fake, per write
            runs = [r for r in fake_supabase.tables["preview_runs"] if r["video_id"] == "v1"]
            seen.append((str(row.get("status")), runs[0].get("summary") if runs else None))

        fake_supabase.on_update["videos"] = status_written
        end = VideoUpdate(status="assets_generated", progress=100, summary=RunSummary(generated=2, elapsed_ms=700))
        after = await store.update("v1", end)
    finally:
        await store.close()
    assert after.status == "assets_generated" and after.summary.generated == 2
    finals = [summary for status, summary in seen if status == "assets_generated"]
    assert finals, "the final status was written"
    assert all(summary_from_json(summary).generated == 2 for summary in finals), seen
