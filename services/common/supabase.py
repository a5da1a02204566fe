"""The server-side Supabase client both Supabase-backed services use: the service-role key,
no session persistence, no token refresh, the client's own retries off (our policy is the
only retry layer), and an explicit timeout. Created on first use (creating sends no
request) and shared by every call of the process."""

from __future__ import annotations

import asyncio

import httpx
from supabase import AClient, AsyncClientOptions, acreate_client


class ServerSupabase:
    def __init__(self, url: str, service_role_key: str, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise SystemExit("SUPABASE_URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self._key = service_role_key
        self.timeout = timeout
        self._client: AClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> AClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._http = httpx.AsyncClient(timeout=self.timeout)
                    self._client = await acreate_client(
                        self.url,
                        self._key,
                        options=AsyncClientOptions(
                            persist_session=False,
                            auto_refresh_token=False,
                            postgrest_client_retry=False,
                            httpx_client=self._http,
                        ),
                    )
        return self._client

    async def session(self) -> tuple[httpx.AsyncClient, dict[str, str]]:
        """The HTTP client the `supabase` client sends through (one connection pool), and
        the headers it authenticates with, for a request the client has no method for."""
        await self.client()
        assert self._http is not None
        return self._http, {"apikey": self._key, "Authorization": f"Bearer {self._key}"}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._client, self._http = None, None
