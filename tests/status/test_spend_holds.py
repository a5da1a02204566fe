"""Spend holds (ReserveSpend / ReleaseSpend) on every store: recorded spend plus open holds
never pass a cap, however many reserve at once; a hold is idempotent per id, ends when
released or at its ttl, and each cap (daily, video, owner) counts only its own spend."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.common.deadlines import Deadline
from services.common.errors import FailedPrecondition
from services.status.book import StatusBook
from services.status.model import HoldRequest, SceneResult, SpendCaps
from services.status.stores.base import StatusStore
from services.status.stores.supabase import SupabaseStore
from tests.fakes import supabase_fake
from tests.fakes.supabase_fake import FakeSupabase

PRICE = 0.04
DAY = 1_000  # the tests' "start of the day": scenes paid at or after it count


def hold(
    video: str = "v1", usd: float = PRICE, owner: str = "", ttl_ms: int = 60_000, rid: str = "", **caps: float
) -> HoldRequest:
    return HoldRequest(rid or uuid.uuid4().hex, video, owner, usd, SpendCaps(since_ms=DAY, **caps), ttl_ms)


async def paid(store: StatusStore, video: str, scene: int, usd: float, at: int = 5_000) -> None:
    await store.report_scene(video, SceneResult(scene, "stored", url="u", cost_usd=usd, paid_at_ms=at))


async def test_twenty_holds_at_once_under_room_for_two_images_grant_two(store: StatusStore) -> None:
    await store.create("v1", 4)
    await paid(store, "v1", 1, 0.02)  # today's spend so far
    await paid(store, "v1", 2, 0.50, at=DAY - 1)  # yesterday's: not in the daily cap
    holds = await asyncio.gather(*(store.reserve_spend(hold(daily_usd=0.10)) for _ in range(20)))
    granted = [h.granted_usd for h in holds]
    # 0.08 of room: two holds of a full image, then what is left is nothing.
    assert sum(granted) == pytest.approx(0.08)
    assert sorted(granted, reverse=True)[:2] == [pytest.approx(PRICE)] * 2
    assert all(h.cap == "daily" for h in holds)
    assert max(h.left_usd for h in holds) == pytest.approx(0.08)  # the first saw the whole room


async def test_a_partial_room_is_granted_and_a_crossed_cap_grants_nothing(store: StatusStore) -> None:
    await store.create("v1", 2)
    await paid(store, "v1", 1, 0.07)
    partial = await store.reserve_spend(hold(daily_usd=0.10))
    assert partial.granted_usd == pytest.approx(0.03)  # a cheaper model may still fit
    none = await store.reserve_spend(hold(daily_usd=0.10))
    assert none.granted_usd == 0 and none.left_usd == pytest.approx(0.0)
    await paid(store, "v1", 2, 0.05)
    crossed = await store.reserve_spend(hold(daily_usd=0.10))
    assert crossed.granted_usd == 0 and crossed.left_usd == pytest.approx(0.10 - 0.12 - 0.03)


async def test_a_hold_is_idempotent_released_once_and_ends_at_its_ttl(store: StatusStore) -> None:
    await store.create("v1", 2)
    first = await store.reserve_spend(hold(rid="r-1", daily_usd=0.05))
    again = await store.reserve_spend(hold(rid="r-1", daily_usd=0.05))  # a retried call
    assert first.granted_usd == again.granted_usd == pytest.approx(PRICE)
    assert (await store.reserve_spend(hold(daily_usd=0.05))).granted_usd == pytest.approx(0.01)  # held once
    assert await store.release_spend("r-1") is True
    assert await store.release_spend("r-1") is False  # released before: not an error
    assert await store.release_spend("never-held") is False
    # A hold whose ttl ran out (its holder died): written already past its end.
    ended = await store.reserve_spend(hold(rid="r-ended", ttl_ms=-1, daily_usd=0.10))
    assert ended.granted_usd == pytest.approx(PRICE)
    after = await store.reserve_spend(hold(daily_usd=0.10))
    assert after.left_usd == pytest.approx(0.10 - 0.01)  # only the other open hold counts


async def test_each_cap_counts_its_own_spend(store: StatusStore) -> None:
    await store.create("v1", 2, owner="alice")
    await store.create("v2", 2, owner="bob")
    await paid(store, "v1", 1, 0.30, at=DAY - 1)  # alice's video, before today
    await paid(store, "v2", 1, 0.20)  # bob's, today
    both = await store.reserve_spend(hold("v1", owner="alice", daily_usd=1.0, video_usd=0.34, owner_usd=0.5))
    # video: 0.34 - 0.30 = 0.04; owner: alice spent nothing today; daily: 1.0 - 0.20.
    assert both.rooms == pytest.approx({"daily": 0.80, "video": 0.04, "owner": 0.50})
    assert both.cap == "video" and both.granted_usd == pytest.approx(PRICE)
    bob = await store.reserve_spend(hold("v2", owner="bob", owner_usd=0.22))
    assert bob.rooms == pytest.approx({"owner": 0.02}) and bob.granted_usd == pytest.approx(0.02)
    alice_again = await store.reserve_spend(hold("v1", owner="alice", owner_usd=0.5))
    assert alice_again.rooms == pytest.approx({"owner": 0.50 - PRICE})  # her open hold counts
    anyone = await store.reserve_spend(hold("v2", usd=0.07))  # no caps: what was asked
    assert anyone.granted_usd == pytest.approx(0.07) and anyone.cap == ""


async def test_a_supabase_database_without_holds_is_a_schema_to_migrate_not_an_outage(
    fake_supabase: FakeSupabase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Code newer than the database (sql/postgres/006 not applied yet): the store starts and
    says what to run; a hold is FAILED_PRECONDITION (the gateway then guards alone) and never
    opens the store's breaker, so reads and writes go on."""
    monkeypatch.setattr(supabase_fake, "FUNCTIONS", {})
    del fake_supabase.tables["preview_spend_holds"]
    store = SupabaseStore(fake_supabase.url, fake_supabase.key, timeout=5)
    try:
        await store.migrate()
        assert any("spend holds are not in this Supabase database" in r.getMessage() for r in caplog.records)
        book = StatusBook(store)
        await book.create("v1", 2, Deadline.of(5))
        for _ in range(5):
            with pytest.raises(FailedPrecondition, match="make migrate"):
                await book.reserve_spend(hold(daily_usd=1.0), Deadline.of(5))
            with pytest.raises(FailedPrecondition):
                await book.release_spend("h", Deadline.of(5))
        assert not book.breaker.is_open
        assert (await book.get("v1", Deadline.of(5))).degraded is False
    finally:
        await store.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
async def test_a_cost_recorded_and_its_hold_dropped_are_one_step_so_an_exact_cap_buys_every_image(
    store: StatusStore,
) -> None:
    """A cap with room for exactly five images, five scenes two at a time, each holding,
    then reporting its cost with the hold it settles: every hold gets a whole image. (Were
    the cost recorded and the hold dropped apart, a hold made between the two would see the
    image counted twice and get less: the placeholder where an image fitted. PostgREST takes
    the two in two requests, so the Supabase store keeps that narrow, cautious window.)"""
    for video in range(8):
        video_id = f"exact{video}"
        await store.create(video_id, 5)
        granted = await five_scenes_two_at_a_time(store, video_id)
        assert granted == [pytest.approx(PRICE)] * 5, granted


async def five_scenes_two_at_a_time(store: StatusStore, video_id: str) -> list[float]:
    """Each scene holds a whole image under a video cap of five, then reports its cost with
    the hold it settles; answers what each hold got."""
    lanes = asyncio.Semaphore(2)
    granted: list[float] = []

    async def scene(n: int) -> None:
        async with lanes:
            held = await store.reserve_spend(hold(video_id, video_usd=5 * PRICE))
            granted.append(held.granted_usd)
            result = SceneResult(n, "stored", url="u", cost_usd=PRICE, paid_at_ms=5_000)
            await store.report_scene(video_id, result, settles=held.reservation_id)

    await asyncio.gather(*(scene(n) for n in range(1, 6)))
    return granted
