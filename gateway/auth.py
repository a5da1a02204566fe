"""Who is calling: a StoryShort user with a Supabase access token, or an operator with the
gateway's service token (GATEWAY_API_KEY).

Access tokens are verified the way Supabase documents: asymmetric signing keys from the
project's JWKS endpoint (cached; fetched again, once, for a key id it does not know; within
a deadline), or the legacy shared HS256 secret where a project still uses it. Issuer,
audience and expiry (with a small leeway) are checked; the algorithm is pinned to the key's
own (no `none`, no HS256 signed with a public key). PyJWT does the cryptography. A verified
token is remembered until it expires, so a poll costs a dictionary lookup, not a signature
check."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from gateway.errors import HTTPError

log = logging.getLogger("auth")
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"})
LEGACY = "HS256"


@dataclass(frozen=True)
class Caller:
    """A verified caller: a user (their Supabase user id), or the operator (user None).
    ``expires``: when the user's access token expires (Unix time; None: never)."""

    user: str | None
    expires: float | None = None

    @property
    def operator(self) -> bool:
        return self.user is None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Until the access token expires (None: it does not)."""
        if self.expires is None:
            return None
        return self.expires - (time.time() if now is None else now)


OPERATOR = Caller(None)
ANONYMOUS = Caller("")  # auth is off: everyone acts as no one in particular


def unauthenticated(message: str) -> HTTPError:
    return HTTPError(401, "UNAUTHENTICATED", message, {"WWW-Authenticate": 'Bearer realm="storyshort"'})


class SigningKeys:
    """The project's JWKS: cached for ``ttl`` seconds; fetched again at once for a key id it
    does not know (at most once per ``refetch_every`` seconds, so unknown ids cannot make it
    hammer the endpoint); each fetch within ``timeout``, and not more than once per
    ``retry_every`` seconds while the endpoint fails. When it fails, the keys already known
    keep working."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 600.0,
        refetch_every: float = 30.0,
        retry_every: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_every = refetch_every
        self.retry_every = retry_every
        self.timeout = timeout
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -math.inf  # monotonic time of the last attempt
        self.loaded_at: float | None = None  # of the last success
        self.unknown_at = -math.inf  # of the last fetch for an unknown key id
        self.fetches = 0
        self.last_error = ""
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = self.loaded_at is None or now - self.loaded_at > self.ttl
        fetched = False
        if stale and now - self.fetched_at >= self.retry_every:
            fetched = await self._fetch(now)
        if kid not in self.keys and not fetched and now - self.unknown_at >= self.refetch_every:
            self.unknown_at = now
            await self._fetch(now)
        return self.keys.get(kid)

    async def _fetch(self, asked_at: float) -> bool:
        """Fetch the keys (one fetch at a time; a caller that waited for another's fetch
        uses its result). Answers whether a fetch happened for this caller."""
        async with self._lock:
            if self.fetched_at >= asked_at:
                return True  # fetched while this caller waited
            self.fetched_at = time.monotonic()
            self.fetches += 1
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    answer = await client.get(self.url)
                answer.raise_for_status()
                found = jwt.PyJWKSet.from_dict(answer.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
                if self.last_error != type(exc).__name__:
                    log.warning("signing keys could not be fetched; known keys still work", extra={"error": repr(exc)})
                self.last_error = type(exc).__name__
                return True
            self.keys = {k.key_id: k for k in found.keys if k.key_id}
            self.loaded_at = time.monotonic()
            self.last_error = ""
            return True


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: SigningKeys | None,
        secret: str | None,
        leeway: float = 30.0,
        cache_size: int = 100_000,
        allow_anonymous: bool = False,
    ) -> None:
        # Supabase's anonymous sign-ins (`is_anonymous: true`): each would get a fresh set of
        # per-user limits, so they are refused unless allowed.
        self.allow_anonymous = allow_anonymous
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.secret = secret
        self.leeway = leeway
        self.cache_size = cache_size
        # sha256(token) -> (user id, expiry as a Unix time)
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    async def user(self, token: str) -> tuple[str, float]:
        """The token's user id (`sub`) and when it expires, or HTTPError 401 (503 when no
        signing key can be had)."""
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if time.time() < known[1] + self.leeway:
                return known
            del self._verified[digest]
        claims = await self._verify(token)
        known = self._verified[digest] = (str(claims["sub"]), float(claims["exp"]))
        while len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return known

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated("the bearer token is not a JWT") from exc
        alg = str(header.get("alg", ""))
        key: Any
        if alg == LEGACY:
            if not self.secret:
                raise unauthenticated("tokens signed with HS256 are not accepted here (no SUPABASE_JWT_SECRET)")
            key = self.secret
        elif alg in ASYMMETRIC:
            key = await self._signing_key(str(header.get("kid", "")), alg)
        else:
            raise unauthenticated(f"token algorithm {alg or 'none'!r} is not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("the access token has expired; sign in again") from exc
        except jwt.InvalidAudienceError as exc:
            raise unauthenticated(f"the access token is not for audience {self.audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthenticated("the access token was issued by another project") from exc
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"the access token is not valid: {type(exc).__name__}") from exc
        if not str(claims.get("sub") or ""):
            raise unauthenticated("the access token names no user")
        if claims.get("is_anonymous") is True and not self.allow_anonymous:
            raise HTTPError(
                403,
                "PERMISSION_DENIED",
                "anonymous sign-ins may not use this API; sign in with an account",
                reason="ANONYMOUS_USER",
            )
        return claims

    async def _signing_key(self, kid: str, alg: str) -> Any:
        if self.keys is None:
            raise unauthenticated(f"tokens signed with {alg} are not accepted here (no AUTH_JWKS_URL)")
        found = await self.keys.key(kid)
        if found is None:
            if not self.keys.keys:
                raise HTTPError(
                    503, "UNAVAILABLE", "the signing keys cannot be fetched now; try again", {"Retry-After": "5"}
                )
            raise unauthenticated("the access token was signed with a key this project does not have")
        if found.algorithm_name != alg:
            raise unauthenticated(f"the token says {alg} but its key is {found.algorithm_name}")
        return found.key


class Authenticator:
    """Bearer token -> Caller. The service token (constant-time comparison) is the operator;
    with users on, any other token must be a valid Supabase access token."""

    def __init__(self, service_token: str | None, verifier: TokenVerifier | None, required: bool) -> None:
        self.service_token = service_token.encode() if service_token else None
        self.verifier = verifier
        self.required = required

    @property
    def users_on(self) -> bool:
        return self.required

    def is_service_token(self, token: str) -> bool:
        return self.service_token is not None and hmac.compare_digest(token.encode(), self.service_token)

    async def caller(self, token: str | None, *, write: bool) -> Caller:
        if token and self.is_service_token(token):
            return OPERATOR
        if not self.required:
            # Users off: the service token guards writes when it is set; reads are open.
            if write and self.service_token is not None:
                raise unauthenticated("send the gateway's API key as 'Authorization: Bearer <key>'")
            return ANONYMOUS
        if not token:
            raise unauthenticated("sign in: send your access token as 'Authorization: Bearer <token>'")
        assert self.verifier is not None
        user, expires = await self.verifier.user(token)
        return Caller(user, expires + self.verifier.leeway)


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
