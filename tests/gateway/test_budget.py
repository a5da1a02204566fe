"""Spend holds asked of the status store (the quote, every cap, released when nothing was
paid), and the guard alone when the store cannot hold: the daily cap fails closed without
a reading from today (no paid image), or goes on from today's last reading plus this
gateway's own spend."""

from __future__ import annotations

import logging
from typing import cast

import grpc
import pytest

from gateway.budget import Allowance, BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import ServiceDown
from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.status.v1 import status_pb2


class StandInStatus:
    """get_spend answers ``usd`` or, while ``down``, fails as an unreachable service does."""

    def __init__(self, usd: float) -> None:
        self.usd = usd
        self.down = False
        self.asked = 0

    async def get_spend(self, since_ms: int, owner: str = "") -> status_pb2.Spend:
        self.asked += 1
        if self.down:
            raise ServiceDown("status", grpc.StatusCode.UNAVAILABLE, "down")
        return status_pb2.Spend(usd=self.usd)


def guard(status: StandInStatus, daily: float) -> BudgetGuard:
    return BudgetGuard(cast(ServiceClients, status), daily_cap=daily, video_cap=None)


async def test_without_a_reading_from_today_the_daily_cap_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    status = StandInStatus(usd=0.0)
    status.down = True
    allowance = await guard(status, daily=5.0).allowance("v", 0.0)
    assert allowance is not None and allowance.usd <= 0 and allowance.cap == "daily"
    assert status.asked == 1
    assert any("no paid image until the status store answers" in r.getMessage() for r in caplog.records)


async def test_with_a_reading_from_today_it_goes_on_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    status = StandInStatus(usd=3.0)
    budget = guard(status, daily=5.0)
    first = await budget.allowance("v", 0.0)
    assert first is not None and first.usd == pytest.approx(2.0)
    budget.spent(0.5)
    status.down = True
    monkeypatch.setattr("gateway.budget.DAILY_READ_EVERY", 0.0)  # read again at once
    later = await budget.allowance("v", 0.0)
    assert later is not None and later.usd == pytest.approx(1.5)  # 5 - (3 read + 0.5 spent here)
    assert status.asked == 2


async def test_the_remaining_gauge_has_a_video_side_for_the_near_cap_alert() -> None:
    from prometheus_client import REGISTRY

    budget = BudgetGuard(cast(ServiceClients, StandInStatus(usd=0.0)), daily_cap=None, video_cap=0.10)
    allowance = await budget.allowance("v", 0.095)
    assert allowance is not None and allowance.cap == "video"
    remaining = REGISTRY.get_sample_value("storyshort_gateway_budget_remaining_usd", {"cap": "video"})
    cap = REGISTRY.get_sample_value("storyshort_gateway_budget_cap_usd", {"cap": "video"})
    assert remaining is not None and cap is not None
    assert remaining == pytest.approx(0.005) and cap == pytest.approx(0.10)
    assert remaining / cap < 0.1  # StoryShortBudgetNearCap's expression, which now can fire


async def test_a_users_spend_is_read_as_everyones_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reader for both: a user's spend fails closed with no reading from today, goes on
    from the last reading plus what this process paid for their videos, and past
    OWNERS_REMEMBERED users the others are forgotten (read again), never this one."""
    status = StandInStatus(usd=1.0)
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=10.0, video_cap=None, owner_share=0.5)
    status.down = True
    closed = await budget.allowance("v", 0.0, owner="ann")
    assert closed is not None and closed.cap in ("daily", "owner") and closed.usd <= 0
    status.down = False
    first = await budget.allowance("v", 0.0, owner="ann")
    assert first is not None and first.cap == "owner" and first.usd == pytest.approx(4.0)  # 5 - 1
    budget.spent(0.75, owner="ann")
    budget.spent(0.5, owner="bob")  # another user's video: everyone's spend, not ann's
    status.down = True
    monkeypatch.setattr("gateway.budget.DAILY_READ_EVERY", 0.0)  # read again at once
    later = await budget.allowance("v", 0.0, owner="ann")
    assert later is not None and later.cap == "owner" and later.usd == pytest.approx(3.25)  # 5 - (1 + 0.75)
    assert budget.readings.today() == pytest.approx(2.25)  # 1 read + 0.75 + 0.5 paid here
    monkeypatch.setattr("gateway.budget.OWNERS_REMEMBERED", 1)
    status.down = False
    await budget.allowance("v", 0.0, owner="cy")
    assert budget.readings.today("cy") == pytest.approx(1.0)
    assert budget.readings.today("ann") is None, "past the bound the other users are forgotten"


class PerUserStatus(StandInStatus):
    """Spend per owner: `mine` for the asked owner, `usd` for everyone."""

    def __init__(self, usd: float, mine: dict[str, float]) -> None:
        super().__init__(usd)
        self.mine = mine
        self.owners: list[str] = []

    async def get_spend(self, since_ms: int, owner: str = "") -> status_pb2.Spend:
        self.owners.append(owner)
        return status_pb2.Spend(usd=self.mine.get(owner, 0.0) if owner else self.usd)


async def test_a_users_share_of_the_daily_cap_bounds_their_images_and_their_starts() -> None:
    from gateway.errors import HTTPError

    status = PerUserStatus(usd=4.0, mine={"alice": 1.9, "bob": 0.1})
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=10.0, video_cap=None, owner_share=0.2)
    alice = await budget.allowance("v", 0.0, "alice")
    assert alice is not None and alice.cap == "owner" and alice.usd == pytest.approx(0.1)  # 2.0 - 1.9
    anonymous = await budget.allowance("v", 0.0)
    assert anonymous is not None and anonymous.cap == "daily" and anonymous.usd == pytest.approx(6.0)
    await budget.check_owner_share("bob")  # under his share: the start goes on
    budget.spent(0.15, "alice")  # her image in flight is counted at once
    with pytest.raises(HTTPError) as refused:
        await budget.check_owner_share("alice")
    assert refused.value.status == 429 and 1 <= int(refused.value.headers["Retry-After"]) <= 86400
    assert "alice" in status.owners and "bob" in status.owners


class HoldingStatus(StandInStatus):
    """ReserveSpend and QuoteImage as the services answer them; ``holds_down``: the status
    service cannot hold (down, or one without ReserveSpend)."""

    def __init__(self, usd: float, room: float) -> None:
        super().__init__(usd)
        self.room = room
        self.holds_down = False
        self.held: list[status_pb2.ReserveSpendRequest] = []
        self.released: list[str] = []
        self.quotes = 0

    async def quote_image(self, size: str, quality: str = "") -> imagegen_pb2.ImageQuote:
        self.quotes += 1
        return imagegen_pb2.ImageQuote(max_usd=0.04)

    async def reserve_spend(self, request: status_pb2.ReserveSpendRequest) -> status_pb2.SpendReservation:
        if self.holds_down:
            raise ServiceDown("status", grpc.StatusCode.UNIMPLEMENTED, "unknown method ReserveSpend")
        self.held.append(request)
        granted = max(0.0, min(request.usd, self.room))
        answer = status_pb2.SpendReservation(
            reservation_id=request.reservation_id, granted_usd=granted, cap="daily", left_usd=self.room
        )
        answer.daily_left_usd = self.room
        self.room -= granted
        return answer

    async def release_spend(self, reservation_id: str) -> None:
        self.released.append(reservation_id)


async def test_a_hold_asks_for_the_quote_under_every_cap_and_is_released_when_nothing_was_paid() -> None:
    status = HoldingStatus(usd=0.0, room=0.06)
    budget = BudgetGuard(
        cast(ServiceClients, status), daily_cap=1.0, video_cap=0.5, owner_share=0.1, hold_seconds=99999
    )
    first = await budget.reserve("v", 0.0, "alice", "1024x1024")
    second = await budget.reserve("v", 0.0, "alice", "1024x1024")
    third = await budget.reserve("v", 0.0, "alice", "1024x1024")
    assert first is not None and second is not None and third is not None
    assert first.usd == pytest.approx(0.04) and first.cap == "daily" and first.hold
    assert second.usd == pytest.approx(0.02) and second.hold  # what is left: a cheaper model may fit
    assert third.usd <= 0 and not third.hold  # no room: nothing held, the placeholder answers
    asked = status.held[0]
    assert asked.usd == pytest.approx(0.04) and asked.ttl_ms == 3_600_000  # the server's most
    assert (asked.caps.daily_usd, asked.caps.video_usd) == (1.0, 0.5) and asked.caps.owner_usd == pytest.approx(0.1)
    assert len({h.reservation_id for h in status.held}) == 3 and status.quotes == 1  # the quote is reused
    await budget.release(second)
    await budget.release(third)  # nothing held: nothing to release
    assert status.released == [second.hold]


async def test_when_the_store_cannot_hold_the_guard_goes_on_alone_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "budget")
    status = HoldingStatus(usd=0.9, room=0.0)
    status.holds_down = True
    budget = guard(status, daily=1.0)
    for _ in range(3):
        alone = await budget.reserve("v", 0.0)
        assert alone is not None and alone.usd == pytest.approx(0.1) and not alone.hold  # from the reading
    said = [r for r in caplog.records if "guards the caps alone" in r.getMessage()]
    assert len(said) == 1
    status.holds_down = False
    status.room = 0.1
    again = await budget.reserve("v", 0.0)
    assert (
        again is not None
        and again.hold
        and any("held in the status store again" in r.getMessage() for r in caplog.records)
    )


class Clock:
    """Wall-clock seconds that a test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class DatedStatus(StandInStatus):
    """Spend with when it was paid: get_spend sums what was paid since ``since_ms``, as the
    status stores do; ReserveSpend is not there (the guard goes on alone from readings)."""

    def __init__(self, paid: list[tuple[int, float]]) -> None:
        super().__init__(0.0)
        self.paid = paid
        self.since: list[int] = []

    async def get_spend(self, since_ms: int, owner: str = "") -> status_pb2.Spend:
        self.asked += 1
        self.since.append(since_ms)
        if self.down:
            raise ServiceDown("status", grpc.StatusCode.UNAVAILABLE, "down")
        return status_pb2.Spend(usd=sum(usd for at, usd in self.paid if at >= since_ms))


MIDNIGHT = 1_796_083_200.0  # 2026-12-01T00:00:00Z


async def test_the_daily_cap_turns_over_at_utc_midnight(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(MIDNIGHT - 0.5)  # 23:59:59.5 on 30 November
    status = DatedStatus(paid=[(int((MIDNIGHT - 3600) * 1000), 5.0)])  # spent at 23:00 that day
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=5.0, video_cap=None, clock=clock)
    before = await budget.allowance("v", 0.0)
    assert before is not None and before.usd <= 0 and before.period == "2026-11-30"
    budget.refused(before)
    clock.now = MIDNIGHT + 0.5  # a second later it is 1 December: yesterday's spend is not today's
    after = await budget.allowance("v", 0.0)
    assert after is not None and after.usd == pytest.approx(5.0) and after.period == "2026-12-01"
    # A new day is read at once (the last reading is under DAILY_READ_EVERY old), since midnight.
    assert status.since == [int((MIDNIGHT - 86400) * 1000), int(MIDNIGHT * 1000)]
    # The breach is told once per cap and day: the new day's is told again.
    budget.refused(Allowance(-1.0, "daily", "2026-11-30", 5.0))
    budget.refused(Allowance(-1.0, "daily", "2026-12-01", 5.0))
    told = [r for r in caplog.records if "budget cap reached" in r.getMessage()]
    assert [getattr(r, "period", None) for r in told] == ["2026-11-30", "2026-12-01"]


async def test_across_midnight_a_reading_from_yesterday_does_not_count_and_the_cap_fails_closed() -> None:
    clock = Clock(MIDNIGHT - 10)
    status = DatedStatus(paid=[])
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=5.0, video_cap=None, clock=clock)
    yesterday = await budget.allowance("v", 0.0)
    assert yesterday is not None and yesterday.usd == pytest.approx(5.0)
    status.down = True
    clock.now = MIDNIGHT + 10
    today = await budget.allowance("v", 0.0)
    assert today is not None and today.usd <= 0, "no reading from today: no paid image"
    status.down = False
    assert (await budget.allowance("v", 0.0)).usd == pytest.approx(5.0)  # type: ignore[union-attr]


async def test_holds_ask_for_spend_since_the_guards_utc_midnight_and_a_spent_share_retries_after_it() -> None:
    from gateway.errors import HTTPError

    clock = Clock(MIDNIGHT - 60)  # 23:59:00
    status = HoldingStatus(usd=0.0, room=1.0)
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=10.0, video_cap=None, owner_share=0.1, clock=clock)
    await budget.reserve("v", 0.0, "", "1024x1024")
    clock.now = MIDNIGHT + 1
    await budget.reserve("v", 0.0, "", "1024x1024")
    assert [h.caps.since_ms for h in status.held] == [int((MIDNIGHT - 86400) * 1000), int(MIDNIGHT * 1000)]
    clock.now = MIDNIGHT - 60
    status.usd = 2.0  # alice's spend today, over her 1.0 share
    with pytest.raises(HTTPError) as refused:
        await budget.check_owner_share("alice")
    assert refused.value.headers["Retry-After"] == "60", "her share comes back at midnight, a minute away"
