"""Budget caps on image spend: optional per video and per day (UTC).

Spend is what the status store holds (each scene's cost, with when it was paid), so caps
hold across restarts. Before each scene the gateway tells imagegen how much may still be
spent; a model that would cross a cap is skipped and the scene gets the placeholder with
the reason "budget". A breach is logged once per cap and period and counted in metrics.
Scenes already in flight may each cross a cap by up to one image's price (at most
SCENE_CONCURRENCY - 1 images).

When today's spend cannot be read, the daily cap fails closed: with a reading from today the
guard goes on from it (plus what this gateway spent since); with none, no paid image is
allowed until the status store answers (scenes get the placeholder, reason "budget")."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway import metrics
from gateway.breakers import ServiceError
from gateway.clients import ServiceClients
from gateway.errors import HTTPError

log = logging.getLogger("budget")
# Seconds a daily-spend reading is reused before the status store is asked again.
DAILY_READ_EVERY = 2.0


def day_start_ms(now: float | None = None) -> int:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


@dataclass(frozen=True)
class Allowance:
    usd: float  # may be negative once a cap is crossed
    cap: str  # "video" | "daily"
    period: str  # the video id, or the UTC day
    limit: float


class BudgetGuard:
    def __init__(
        self,
        clients: ServiceClients,
        daily_cap: float | None,
        video_cap: float | None,
        user_share: float | None = None,
    ) -> None:
        self.clients = clients
        self.daily_cap = daily_cap
        self.video_cap = video_cap
        # One user's share of the daily cap (signed-in users only).
        self.user_cap = daily_cap * user_share if daily_cap is not None and user_share is not None else None
        self._users: dict[str, tuple[int, float, float]] = {}  # owner -> (day, spend read, when read)
        self._users_local: dict[str, float] = {}
        self._daily: tuple[int, float, float] | None = None  # (day, spend read, when read)
        self._daily_local = 0.0  # spent by this gateway since the last reading
        self._breached: set[tuple[str, str]] = set()
        for cap, value in (("daily", daily_cap), ("video", video_cap)):
            if value is not None:
                metrics.BUDGET_CAP.labels(cap).set(value)
                metrics.BUDGET_BREACHES.labels(cap)  # the series exists before the first breach
                # Unknown (NaN: no alert compares true) until the first check reads the spend.
                metrics.BUDGET_REMAINING.labels(cap).set(float("nan"))

    @property
    def active(self) -> bool:
        return self.daily_cap is not None or self.video_cap is not None

    async def _daily_spend(self) -> float:
        day = day_start_ms()
        now = time.monotonic()
        if self._daily is None or self._daily[0] != day or now - self._daily[2] > DAILY_READ_EVERY:
            try:
                spend = await self.clients.get_spend(day)
                self._daily = (day, spend.usd, now)
                self._daily_local = 0.0
            except ServiceError as exc:
                if self._daily is None or self._daily[0] != day:
                    log.error(
                        "today's spend cannot be read and there is no reading from today: no paid image "
                        "until the status store answers",
                        extra={"code": exc.code.name},
                    )
                    return math.inf
                log.warning("could not read today's spend; using the last reading", extra={"code": exc.code.name})
        return self._daily[1] + self._daily_local

    async def _user_spend(self, owner: str) -> float:
        """What this user's videos spent today (fails closed like the daily cap)."""
        day = day_start_ms()
        now = time.monotonic()
        known = self._users.get(owner)
        if known is None or known[0] != day or now - known[2] > DAILY_READ_EVERY:
            try:
                spend = await self.clients.get_spend(day, owner)
                known = self._users[owner] = (day, spend.usd, now)
                self._users_local[owner] = 0.0
            except ServiceError as exc:
                if known is None or known[0] != day:
                    log.error("a user's spend cannot be read: no paid image for them", extra={"code": exc.code.name})
                    return math.inf
        if len(self._users) > 10_000:  # forget the day's other users, keep this one
            self._users = {owner: known}
            self._users_local = {owner: self._users_local.get(owner, 0.0)}
        return known[1] + self._users_local.get(owner, 0.0)

    async def allowance(self, video_id: str, video_spend: float, owner: str = "") -> Allowance | None:
        """What the next image may cost under the tightest cap, or None when no cap is set.
        ``owner``: the signed-in user whose video it is (their share of the daily cap)."""
        if not self.active:
            return None
        left: list[Allowance] = []
        if self.video_cap is not None:
            left.append(Allowance(self.video_cap - video_spend, "video", video_id, self.video_cap))
            # What the video being generated has left: the near-cap alert's per-video side.
            metrics.BUDGET_REMAINING.labels("video").set(self.video_cap - video_spend)
        if self.daily_cap is not None:
            daily = await self._daily_spend()
            remaining = self.daily_cap - daily if math.isfinite(daily) else -self.daily_cap
            if math.isfinite(daily):
                metrics.BUDGET_REMAINING.labels("daily").set(remaining)
            left.append(Allowance(remaining, "daily", datetime.now(UTC).date().isoformat(), self.daily_cap))
        if owner and self.user_cap is not None:
            mine = await self._user_spend(owner)
            remaining = self.user_cap - mine if math.isfinite(mine) else -self.user_cap
            left.append(Allowance(remaining, "user", f"{owner} {datetime.now(UTC).date().isoformat()}", self.user_cap))
        return min(left, key=lambda a: a.usd)

    async def check_user(self, owner: str) -> None:
        """Before a user's start: 429 (Retry-After: the next UTC day) once their share of the
        daily cap is spent, so nothing is started that could only get placeholders."""
        if not owner or self.user_cap is None:
            return
        if await self._user_spend(owner) >= self.user_cap:
            now = time.time()
            retry_after = max(1, int(day_start_ms(now) / 1000 + 86400 - now))
            raise HTTPError(
                429,
                "RESOURCE_EXHAUSTED",
                f"your share of today's image budget ({self.user_cap:g} USD) is spent; start again tomorrow (UTC)",
                {"Retry-After": str(retry_after)},
            )

    def refused(self, allowance: Allowance) -> None:
        """A scene got the placeholder because of this cap: log and count it once per period."""
        key = (allowance.cap, allowance.period)
        if key in self._breached:
            return
        self._breached.add(key)
        metrics.BUDGET_BREACHES.labels(allowance.cap).inc()
        log.error(
            "budget cap reached: scenes get placeholders until it resets or is raised",
            extra={
                "cap": allowance.cap,
                "period": allowance.period,
                "limit_usd": allowance.limit,
                "left_usd": round(max(allowance.usd, 0.0), 6),
            },
        )

    def spent(self, usd: float, owner: str = "") -> None:
        self._daily_local += usd
        if self.daily_cap is not None and self._daily is not None and self._daily[0] == day_start_ms():
            # What is left as soon as an image is paid, not only at the next scene's check.
            metrics.BUDGET_REMAINING.labels("daily").set(self.daily_cap - self._daily[1] - self._daily_local)
        if owner:
            self._users_local[owner] = self._users_local.get(owner, 0.0) + usd
