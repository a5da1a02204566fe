"""Budget caps on image spend: optional per video, per day (UTC) and per signed-in user.

Spend is what the status store holds (each scene's cost, with when it was paid), so caps
hold across restarts. Before each scene the gateway asks imagegen the most one image can
cost (QuoteImage) and holds that much in the status store (ReserveSpend): recorded spend
plus every open hold stays within each cap, whatever the number of videos, gateways and
workers, because they all hold in the same store. imagegen is told what was granted; a
model that would cost more is skipped and, if none fits, the scene gets the placeholder
with the reason "budget". The hold is released when the scene's cost is recorded (the
report carries it) or at once when nothing was paid; a holder that dies leaves it to end
at its ttl. A breach is logged once per cap and period and counted in metrics.

The caps are named as the status service names them, one way everywhere: "daily", "video",
and "owner" (the signed-in user a video belongs to; BUDGET_USER_SHARE of the daily cap).

What can still pass a cap: an image whose real cost exceeds its estimate (a token-priced
model that used more tokens than its per-image price says), and a model with no price.

When the status store cannot hold (down, or an older one without ReserveSpend), the guard
goes on alone, as before holds: from today's last reading plus what this process spent
since (each scene in flight may then cross a cap by up to one image's price), and with no
reading from today it fails closed: no paid image until the store answers (scenes get the
placeholder, reason "budget")."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway import metrics
from gateway.clients import ServiceClients
from gateway.errors import CallFailed, HTTPError
from storyshort.status.v1 import status_pb2

log = logging.getLogger("budget")
# Seconds a daily-spend reading is reused before the status store is asked again.
DAILY_READ_EVERY = 2.0
# Seconds imagegen's quote for a size is reused (prices change only with its configuration).
QUOTE_FRESH = 60.0
# The status store's bounds on a hold's ttl.
HOLD_SECONDS = (1.0, 3600.0)
# Users whose spend today is remembered at once (past it, the others are read again).
OWNERS_REMEMBERED = 10_000


def day_start_ms(now: float) -> int:
    """When the UTC day of ``now`` (Unix seconds) began, in ms."""
    moment = datetime.fromtimestamp(now, UTC)
    return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


@dataclass(frozen=True)
class Allowance:
    usd: float  # may be negative once a cap is crossed
    cap: str  # "video" | "daily" | "owner" (the status service's names, and the metrics' cap label)
    period: str  # the video id, or the UTC day
    limit: float
    hold: str = ""  # the status store's hold of this much (empty: none)


@dataclass
class Reading:
    day: int  # the UTC day it is of (its start, ms)
    usd: float  # spent that day, as the status store said
    at: float  # when it was read (time.monotonic())
    local: float = 0.0  # spent by this process since


class SpendReadings:
    """Today's spend, of everyone (owner "") or of one user's videos, for when the status
    store cannot hold: the store's last reading (asked again every DAILY_READ_EVERY s) plus
    what this process spent since. With no reading from today it fails closed: math.inf,
    so no paid image until the store answers."""

    def __init__(self, clients: ServiceClients, day: Callable[[], int]) -> None:
        self.clients = clients
        self.day = day
        self._readings: dict[str, Reading] = {}

    async def spend(self, owner: str = "") -> float:
        day, now = self.day(), time.monotonic()
        known = self._readings.get(owner)
        if known is None or known.day != day or now - known.at > DAILY_READ_EVERY:
            try:
                answer = await self.clients.get_spend(day, owner)
                known = self.read(answer.usd, owner)
            except CallFailed as exc:
                whose = "a user's spend today" if owner else "today's spend"
                if known is None or known.day != day:
                    log.error(
                        f"{whose} cannot be read and there is no reading from today: no paid image "
                        "until the status store answers",
                        extra={"code": exc.code.name},
                    )
                    return math.inf
                log.warning(f"could not read {whose}; using the last reading", extra={"code": exc.code.name})
        return known.usd + known.local

    def read(self, usd: float, owner: str = "") -> Reading:
        """A new reading (from the store, or a hold's answer), which what this process spent
        before it is part of."""
        if owner and len(self._readings) > OWNERS_REMEMBERED:  # forget the day's other users
            self._readings = {key: self._readings[key] for key in ("",) if key in self._readings}
        reading = self._readings[owner] = Reading(self.day(), usd, time.monotonic())
        return reading

    def spent(self, usd: float, owner: str = "") -> None:
        """An image paid by this process: everyone's spend and its owner's."""
        for key in ("", owner) if owner else ("",):
            if (known := self._readings.get(key)) is not None:
                known.local += usd

    def today(self, owner: str = "") -> float | None:
        """The spend as known now, without asking (None: no reading from today)."""
        known = self._readings.get(owner)
        return known.usd + known.local if known is not None and known.day == self.day() else None


class BudgetGuard:
    def __init__(
        self,
        clients: ServiceClients,
        daily_cap: float | None,
        video_cap: float | None,
        owner_share: float | None = None,
        hold_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        # Wall-clock seconds: when the UTC day (and with it the daily caps) turns over.
        self.clock = clock
        # How long a hold lasts unless released: past the longest a scene takes from its
        # hold to its recorded report.
        self.hold_ms = int(min(max(hold_seconds, HOLD_SECONDS[0]), HOLD_SECONDS[1]) * 1000)
        self._quotes: dict[str, tuple[float, float]] = {}  # size -> (most one image costs, when asked)
        self._alone = False  # holds failed: going on from local readings
        self.daily_cap = daily_cap
        self.video_cap = video_cap
        # The owner cap: one user's share of the daily cap, for the videos they own.
        self.owner_cap = daily_cap * owner_share if daily_cap is not None and owner_share is not None else None
        self.readings = SpendReadings(clients, self._day)  # for when the store cannot hold
        self._breached: set[tuple[str, str]] = set()
        for cap, value in (("daily", daily_cap), ("video", video_cap)):
            if value is not None:
                metrics.BUDGET_CAP.labels(cap).set(value)
                metrics.BUDGET_BREACHES.labels(cap)  # the series exists before the first breach
                # Unknown (NaN: no alert compares true) until the first check reads the spend.
                metrics.BUDGET_REMAINING.labels(cap).set(float("nan"))

    def _today(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).date().isoformat()

    def _day(self) -> int:
        """When today (UTC, by the guard's clock) began, in ms: what the daily caps count from."""
        return day_start_ms(self.clock())

    @property
    def active(self) -> bool:
        return self.daily_cap is not None or self.video_cap is not None

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
            daily = await self.readings.spend()
            remaining = self.daily_cap - daily if math.isfinite(daily) else -self.daily_cap
            if math.isfinite(daily):
                metrics.BUDGET_REMAINING.labels("daily").set(remaining)
            left.append(Allowance(remaining, "daily", self._today(), self.daily_cap))
        if owner and self.owner_cap is not None:
            mine = await self.readings.spend(owner)
            remaining = self.owner_cap - mine if math.isfinite(mine) else -self.owner_cap
            left.append(Allowance(remaining, "owner", f"{owner} {self._today()}", self.owner_cap))
        return min(left, key=lambda a: a.usd)

    async def reserve(self, video_id: str, video_spend: float, owner: str = "", size: str = "") -> Allowance | None:
        """Hold what the next image may cost under every cap, in the status store that every
        gateway and worker shares; None when no cap is set. ``video_spend``: the video's
        spend as this run knows it (for the fallback when the store cannot hold)."""
        if not self.active:
            return None
        try:
            quote = await self._quote(size)
            day = self._day()
            caps = status_pb2.SpendCaps(since_ms=day, daily_usd=self.daily_cap, video_usd=self.video_cap)
            if owner and self.owner_cap is not None:
                caps.owner_usd = self.owner_cap
            held = await self.clients.reserve_spend(
                status_pb2.ReserveSpendRequest(
                    reservation_id=uuid.uuid4().hex,
                    video_id=video_id,
                    owner=owner,
                    usd=quote,
                    caps=caps,
                    ttl_ms=self.hold_ms,
                )
            )
        except CallFailed as exc:
            if not self._alone:
                self._alone = True
                log.warning(
                    "spend cannot be held in the status store; each process guards the caps alone until it can",
                    extra={"code": exc.code.name},
                )
            return await self.allowance(video_id, video_spend, owner)
        if self._alone:
            log.info("spend is held in the status store again")
            self._alone = False
        return self._granted(held, video_id, owner)

    def _granted(self, held: status_pb2.SpendReservation, video_id: str, owner: str) -> Allowance:
        today = self._today()
        if held.HasField("daily_left_usd"):
            # A reading for the fallback: recorded spend and the others' holds, as of now
            # (this image is added by spent() once paid).
            self.readings.read((self.daily_cap or 0.0) - held.daily_left_usd)
            metrics.BUDGET_REMAINING.labels("daily").set(held.daily_left_usd - held.granted_usd)
        if held.HasField("video_left_usd"):
            metrics.BUDGET_REMAINING.labels("video").set(held.video_left_usd - held.granted_usd)
        limits = {"daily": self.daily_cap, "video": self.video_cap, "owner": self.owner_cap}
        cap = held.cap if held.cap in limits else "daily"
        period = {"video": video_id, "owner": f"{owner} {today}"}.get(cap, today)
        limit = limits[cap] or 0.0
        usd = held.granted_usd if held.granted_usd > 0 else min(held.left_usd, 0.0)
        return Allowance(usd, cap, period, limit, held.reservation_id if held.granted_usd > 0 else "")

    async def _quote(self, size: str) -> float:
        """The most one image of this size can cost (imagegen's price table), reused a while."""
        known = self._quotes.get(size)
        now = time.monotonic()
        if known is None or now - known[1] > QUOTE_FRESH:
            answer = await self.clients.quote_image(size)
            known = self._quotes[size] = (answer.max_usd, now)
        return known[0]

    async def release(self, allowance: Allowance | None) -> None:
        """Drop a hold whose image cost nothing; one that cannot be dropped ends at its ttl."""
        if allowance is None or not allowance.hold:
            return
        try:
            await self.clients.release_spend(allowance.hold)
        except CallFailed as exc:
            log.warning("a spend hold could not be released; it ends at its ttl", extra={"code": exc.code.name})

    async def check_owner_share(self, owner: str) -> None:
        """Before a user's start: 429 (Retry-After: the next UTC day) once their share of the
        daily cap is spent, so nothing is started that could only get placeholders."""
        if not owner or self.owner_cap is None:
            return
        if await self.readings.spend(owner) >= self.owner_cap:
            now = self.clock()
            retry_after = max(1, int(day_start_ms(now) / 1000 + 86400 - now))
            raise HTTPError(
                429,
                "RESOURCE_EXHAUSTED",
                f"your share of today's image budget ({self.owner_cap:g} USD) is spent; start again tomorrow (UTC)",
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
        self.readings.spent(usd, owner)
        today = self.readings.today()
        if self.daily_cap is not None and today is not None:
            # What is left as soon as an image is paid, not only at the next scene's check.
            metrics.BUDGET_REMAINING.labels("daily").set(self.daily_cap - today)
