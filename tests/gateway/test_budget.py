"""The daily cap when today's spend cannot be read: it fails closed (no reading from today:
no paid image), or goes on from today's last reading plus this gateway's own spend."""

from __future__ import annotations

from typing import cast

import grpc
import pytest

from gateway.breakers import ServiceDown
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
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
    budget = BudgetGuard(cast(ServiceClients, status), daily_cap=10.0, video_cap=None, user_share=0.2)
    alice = await budget.allowance("v", 0.0, "alice")
    assert alice is not None and alice.cap == "user" and alice.usd == pytest.approx(0.1)  # 2.0 - 1.9
    anonymous = await budget.allowance("v", 0.0)
    assert anonymous is not None and anonymous.cap == "daily" and anonymous.usd == pytest.approx(6.0)
    await budget.check_user("bob")  # under his share: the start goes on
    budget.spent(0.15, "alice")  # her image in flight is counted at once
    with pytest.raises(HTTPError) as refused:
        await budget.check_user("alice")
    assert refused.value.status == 429 and 1 <= int(refused.value.headers["Retry-After"]) <= 86400
    assert "alice" in status.owners and "bob" in status.owners
