"""Supabase access tokens, verified as Supabase documents, against keys made in the test: an
RSA and an EC key pair served from a local JWKS endpoint, and the legacy HS256 secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import jwt
import pytest

from gateway.auth import Authenticator, SigningKeys, TokenVerifier
from gateway.errors import HTTPError
from tests.fakes.jwks_fake import LEGACY_SECRET, FakeAuth, rsa_key

USER = "3f1e2d4c-aaaa-4bbb-8ccc-123456789abc"


@pytest.fixture
def auth() -> Iterator[FakeAuth]:
    with FakeAuth() as fake:
        yield fake


def verifier_for(fake: FakeAuth, *, secret: str | None = LEGACY_SECRET, **keys: float) -> TokenVerifier:
    return TokenVerifier(
        issuer=fake.issuer,
        audience="authenticated",
        keys=SigningKeys(fake.jwks_url, **keys),
        secret=secret,
        leeway=5,
    )


async def refused(verifier: TokenVerifier, token: str) -> HTTPError:
    with pytest.raises(HTTPError) as caught:
        await verifier.user(token)
    return caught.value


async def test_valid_tokens_of_each_kind_name_their_user(auth: FakeAuth) -> None:
    verifier = verifier_for(auth)
    assert (await verifier.user(auth.token(USER)))[0] == USER  # RS256
    assert (await verifier.user(auth.token(USER, key=auth.keys[1])))[0] == USER  # ES256
    assert (await verifier.user(auth.legacy_token(USER)))[0] == USER  # the legacy HS256 secret
    assert auth.fetches == 1, "the JWKS is fetched once and cached"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda a: a.token(USER, expires_in=-3600), "expired"),
        (lambda a: a.token(USER, iss="https://other.supabase.co/auth/v1"), "another project"),
        (lambda a: a.token(USER, aud="anon"), "audience"),
        (lambda a: a.token(""), "names no user"),
        (lambda a: a.legacy_token(USER, secret="not-the-project-secret-0123456789"), "not valid"),
        (lambda a: "not.a.jwt", "not a JWT"),
    ],
)
async def test_bad_tokens_are_refused_with_401(auth: FakeAuth, make: object, words: str) -> None:
    error = await refused(verifier_for(auth), make(auth))  # type: ignore[operator]
    assert error.status == 401 and error.code == "UNAUTHENTICATED"
    assert words in error.message
    assert error.headers["WWW-Authenticate"].startswith("Bearer")


def unsigned(payload: dict[str, object], header: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


async def test_alg_none_is_refused(auth: FakeAuth) -> None:
    claims = jwt.decode(auth.token(USER), options={"verify_signature": False})
    error = await refused(verifier_for(auth), unsigned(claims, {"alg": "none", "typ": "JWT"}))
    assert error.status == 401 and "'none'" in error.message


async def test_hs256_signed_with_the_public_key_is_refused(auth: FakeAuth) -> None:
    """Key confusion: a token 'signed' with HMAC over the RSA public key (which anyone can
    fetch) must never verify: HS256 is checked only with the project's secret."""
    pem = auth.keys[0].public_pem
    claims = {"sub": USER, "aud": "authenticated", "iss": auth.issuer, "exp": int(time.time()) + 600}
    signing_input = unsigned(claims, {"alg": "HS256", "typ": "JWT", "kid": auth.keys[0].kid})[:-1]
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with_secret = await refused(verifier_for(auth), token)
    without_secret = await refused(verifier_for(auth, secret=None), token)
    assert with_secret.status == 401 and "not valid" in with_secret.message
    assert without_secret.status == 401 and "HS256 are not accepted" in without_secret.message


async def test_an_unknown_kid_refetches_the_keys_once_then_refuses(auth: FakeAuth) -> None:
    verifier = verifier_for(auth, refetch_every=60)
    assert (await verifier.user(auth.token(USER)))[0] == USER
    stranger = rsa_key("rotated-away")
    first = await refused(verifier, auth.token(USER, key=stranger))
    assert first.status == 401 and "key this project does not have" in first.message
    assert auth.fetches == 2, "one refetch for the unknown kid"
    await refused(verifier, auth.token("someone-else", key=stranger))
    assert auth.fetches == 2, "not again within refetch_every"


async def test_a_rotated_key_is_picked_up_by_the_refetch(auth: FakeAuth) -> None:
    verifier = verifier_for(auth, refetch_every=0)
    assert (await verifier.user(auth.token(USER)))[0] == USER
    new = rsa_key("rsa-2")
    auth.keys.append(new)
    assert (await verifier.user(auth.token(USER, key=new)))[0] == USER
    assert auth.fetches == 2


async def test_the_jwks_endpoint_down_cached_keys_still_work(auth: FakeAuth) -> None:
    verifier = verifier_for(auth, ttl=0, retry_every=0, timeout=0.5)
    assert (await verifier.user(auth.token(USER)))[0] == USER
    auth.fault = 500
    assert (await verifier.user(auth.token("second-user")))[0] == "second-user"  # refetch failed; old keys kept
    auth.fault = "hang"
    started = time.monotonic()
    assert (await verifier.user(auth.token("third-user")))[0] == "third-user"
    assert time.monotonic() - started < 5, "the fetch has a deadline"
    assert auth.fetches >= 3


async def test_no_keys_at_all_is_503_never_a_crash(auth: FakeAuth) -> None:
    auth.fault = 503
    error = await refused(verifier_for(auth, timeout=0.5), auth.token(USER))
    assert error.status == 503 and error.headers["Retry-After"]
    assert (await verifier_for(auth).user(auth.legacy_token(USER)))[0] == USER  # HS256 needs no JWKS


async def test_a_verified_token_is_remembered_until_it_expires(auth: FakeAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = verifier_for(auth)
    token = auth.token(USER, expires_in=60)
    assert (await verifier.user(token))[0] == USER
    calls = 0
    real = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    for _ in range(100):
        assert (await verifier.user(token))[0] == USER
    assert calls == 0, "a known token costs no signature check"
    # Past its expiry (and the leeway) by the gateway's clock, it is checked again.
    later = time.time() + 3600
    monkeypatch.setattr("gateway.auth.time.time", lambda: later)
    await verifier.user(token)
    assert calls == 1


async def test_the_service_token_is_the_operator_and_users_off_leaves_reads_open(auth: FakeAuth) -> None:
    on = Authenticator("service-token-0123456789", verifier_for(auth), required=True)
    assert (await on.caller("service-token-0123456789", write=True)).operator
    assert (await on.caller(auth.token(USER), write=False)).user == USER
    with pytest.raises(HTTPError) as none:
        await on.caller(None, write=False)
    assert none.value.status == 401
    off = Authenticator("service-token-0123456789", None, required=False)
    assert (await off.caller(None, write=False)).user == ""
    with pytest.raises(HTTPError):
        await off.caller(None, write=True)
    assert (await Authenticator(None, None, required=False).caller(None, write=True)).user == ""
