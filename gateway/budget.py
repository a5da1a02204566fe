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
    def __init__(self, clients: ServiceClients, daily_cap: float | None, video_cap: float | None) -> None:
        self.clients = clients
        self.daily_cap = daily_cap
        self.video_cap = video_cap
        self._daily: tuple[int, float, float] | None = None  # (day, spend read, when read)
        self._daily_local = 0.0  # spent by this gateway since the last reading
        self._breached: set[tuple[str, str]] = set()
        for cap, value in (("daily", daily_cap), ("video", video_cap)):
            if value is not None:
                metrics.BUDGET_CAP.labels(cap).set(value)
                metrics.BUDGET_BREACHES.labels(cap)  # the series exists before the first breach

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

    async def allowance(self, video_id: str, video_spend: float) -> Allowance | None:
        """What the next image may cost under the tightest cap, or None when no cap is set."""
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
        return min(left, key=lambda a: a.usd)

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

    def spent(self, usd: float) -> None:
        self._daily_local += usd
