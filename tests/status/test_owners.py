"""Owners and per-user limits, on each of the three stores (and through the status book,
which enforces them): a video belongs to the user whose start created it; someone else's
video is NOT_FOUND; starts count against per-user limits in the store, so every gateway
replica and restart sees the same counts."""

from __future__ import annotations

import pytest

from services.common.deadlines import Deadline
from services.common.errors import LimitReached, NotFound
from services.status.book import StatusBook
from services.status.model import SceneResult, UserLimits, check_limits, now_ms
from services.status.stores.base import StatusStore

ALICE, BOB = "7d4c1f0e-0000-4e8f-9a1b-00000000a11c", "7d4c1f0e-0000-4e8f-9a1b-000000000b0b"


def book_of(store: StatusStore) -> StatusBook:
    return StatusBook(store, attempt_timeout=5)


async def test_a_video_belongs_to_the_user_who_started_it(store: StatusStore) -> None:
    book = book_of(store)
    started = await book.start("alices", 2, Deadline.of(10), {1: "a", 2: "b"}, owner=ALICE)
    assert started.owner == ALICE and started.status == "generating_images"
    assert (await book.get("alices", Deadline.of(5))).video.owner == ALICE
    with pytest.raises(NotFound):
        await book.start("alices", 2, Deadline.of(10), {1: "x", 2: "y"}, owner=BOB)
    after = (await book.get("alices", Deadline.of(5))).video
    assert after.prompts == {1: "a", 2: "b"}, "a refused start writes nothing"
    # An operator (no owner) may start anyone's video; the owner stays.
    again = await book.start("alices", 2, Deadline.of(10), owner="")
    assert again.owner == ALICE


async def test_limits_count_starts_per_user(store: StatusStore) -> None:
    book = book_of(store)
    limits = UserLimits(videos_per_hour=2, scenes_per_day=0)
    for n in range(2):
        await book.start(f"a{n}", 3, Deadline.of(10), owner=ALICE, limits=limits)
    with pytest.raises(LimitReached) as refused:
        await book.start("a2", 3, Deadline.of(10), owner=ALICE, limits=limits)
    assert refused.value.retry_after is not None and 3000 <= refused.value.retry_after <= 3600
    assert "2 videos started in the last hour" in str(refused.value)
    assert await store.get("a2") is None, "nothing written for a refused start"
    await book.start("b0", 3, Deadline.of(10), owner=BOB, limits=limits)  # Bob has his own count


async def test_a_waiting_start_is_admitted_counted_and_claimed_without_starting(store: StatusStore) -> None:
    book = book_of(store)
    limits = UserLimits(videos_per_hour=1)
    admitted = await book.admit("waits", 2, Deadline.of(10), owner=ALICE, limits=limits)
    assert admitted.owner == ALICE and admitted.status == "draft", "claimed, not started"
    with pytest.raises(NotFound):  # the id is Alice's while it waits
        await book.admit("waits", 2, Deadline.of(10), owner=BOB, limits=limits)
    with pytest.raises(LimitReached):  # counted: her next start is over the limit
        await book.admit("another", 2, Deadline.of(10), owner=ALICE, limits=limits)
    assert await store.get("another") is None, "nothing written for a refused admission"
    started = await book.start("waits", 2, Deadline.of(10), {1: "a", 2: "b"}, owner=ALICE)  # its turn: no limits
    assert started.status == "generating_images" and started.owner == ALICE


async def test_scenes_per_day_and_spend_per_user(store: StatusStore) -> None:
    book = book_of(store)
    limits = UserLimits(scenes_per_day=5)
    await book.start("s1", 3, Deadline.of(10), owner=ALICE, limits=limits)
    with pytest.raises(LimitReached, match="3 scenes started in the last day"):
        await book.start("s2", 3, Deadline.of(10), owner=ALICE, limits=limits)
    await book.start("s3", 2, Deadline.of(10), owner=ALICE, limits=limits)
    await book.start("t1", 1, Deadline.of(10), owner=BOB)
    paid = now_ms()
    await store.report_scene(
        "s1", SceneResult(scene=1, state="stored", url="https://x/1", cost_usd=0.25, paid_at_ms=paid)
    )
    await store.report_scene(
        "t1", SceneResult(scene=1, state="stored", url="https://x/2", cost_usd=0.5, paid_at_ms=paid)
    )
    assert (await store.spend_since(paid - 1, ALICE)).usd == pytest.approx(0.25)
    assert (await store.spend_since(paid - 1, BOB)).usd == pytest.approx(0.5)
    assert (await store.spend_since(paid - 1)).usd == pytest.approx(0.75)


def test_retry_after_says_when_the_oldest_start_leaves_the_window() -> None:
    now = 10_000_000_000
    hour = 3_600_000
    starts = [(now - hour + 60_000, 1), (now - 1000, 1)]
    with pytest.raises(LimitReached) as one:
        check_limits(starts, 1, UserLimits(videos_per_hour=2), now)
    assert one.value.retry_after == pytest.approx(60.0)
    day = 24 * hour
    with pytest.raises(LimitReached) as two:
        check_limits([(now - day + 5000, 4), (now - 1000, 4)], 3, UserLimits(scenes_per_day=10), now)
    assert two.value.retry_after == pytest.approx(5.0)
    check_limits(starts, 1, UserLimits(), now)  # no limits: never refused
