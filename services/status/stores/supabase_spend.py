"""The Supabase store's spend: what was paid since a moment (all, or one owner's), and the
holds that keep concurrent images within the caps (the same SQL function as the PostgreSQL
store, one transaction on the server). None of it touches the frontend's table."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from postgrest.exceptions import APIError
from supabase import AClient

from services.common.errors import FailedPrecondition
from services.status.model import Hold, HoldRequest, Spend, hold_rooms
from services.status.stores.base import StoreUnavailable

T = TypeVar("T")

HOLDS_MISSING = (
    "spend holds are not in this Supabase database (sql/postgres/006_spend_holds.sql): budget caps "
    "are guarded by each process alone until it is applied with STATUS_STORE=postgres "
    "DATABASE_URL=<the Supabase database URL> make migrate"
)


def rows(response: Any) -> list[dict[str, Any]]:
    """The rows of a PostgREST answer."""
    return [dict(r) for r in (response.data or [])]


def _holds_missing(exc: APIError) -> None:
    """A database without the spend-hold function or table is a schema to migrate, not an
    outage: FAILED_PRECONDITION (the callers guard alone), never the store breaker."""
    if str(exc.code or "") in ("PGRST202", "PGRST205", "42883", "42P01"):
        raise FailedPrecondition(HOLDS_MISSING) from exc


class SupabaseSpend:
    """Spend and holds for SupabaseStore, through its ``_run`` (one client, its breaker)."""

    @abstractmethod
    async def _run(self, work: Callable[[AClient], Awaitable[T]]) -> T: ...

    async def spend_since(self, since_ms: int, owner: str = "") -> Spend:
        async def work(db: AClient) -> Spend:
            query = db.table("preview_scenes").select("cost_usd,cost_known,video_id").gte("paid_at_ms", since_ms)
            paid = rows(await query.execute())
            if owner:
                ids = {str(r["video_id"]) for r in paid}
                mine = (
                    rows(
                        await db.table("preview_runs")
                        .select("video_id")
                        .eq("owner", owner)
                        .in_("video_id", sorted(ids))
                        .execute()
                    )
                    if ids
                    else []
                )
                keep = {str(r["video_id"]) for r in mine}
                paid = [r for r in paid if str(r["video_id"]) in keep]
            return Spend(sum(float(r["cost_usd"] or 0) for r in paid), sum(1 for r in paid if not r["cost_known"]))

        return await self._run(work)

    async def reserve_spend(self, request: HoldRequest) -> Hold:
        """The same SQL function as the PostgreSQL store (one transaction on the server)."""
        caps = request.caps

        async def work(db: AClient) -> Hold:
            params = {
                "p_id": request.reservation_id,
                "p_video_id": request.video_id,
                "p_owner": request.owner,
                "p_usd": request.usd,
                "p_since_ms": caps.since_ms,
                "p_daily_usd": caps.daily_usd,
                "p_video_usd": caps.video_usd,
                "p_owner_usd": caps.owner_usd,
                "p_ttl_ms": request.ttl_ms,
            }
            try:
                answered = rows(await db.rpc("reserve_preview_spend", params).execute())
            except APIError as exc:
                _holds_missing(exc)
                raise
            if len(answered) != 1:
                raise StoreUnavailable(f"supabase: reserve_preview_spend answered {len(answered)} rows, not 1")
            row = answered[0]
            return Hold(request.reservation_id, float(row["granted_usd"]), hold_rooms(row))

        return await self._run(work)

    async def release_spend(self, reservation_id: str) -> bool:
        async def work(db: AClient) -> bool:
            try:
                gone = await db.table("preview_spend_holds").delete().eq("id", reservation_id).execute()
            except APIError as exc:
                _holds_missing(exc)
                raise
            return bool(rows(gone))

        return await self._run(work)
