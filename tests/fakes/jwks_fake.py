"""A fake Supabase Auth for tokens: test key pairs (RSA and EC), their JWKS served over real
HTTP at the path Supabase serves it, and tokens signed the way Supabase signs access
tokens (issuer <url>/auth/v1, audience `authenticated`, `sub` the user id). Faults: the
endpoint down (500) or hanging."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.fakes.http import LoopbackServer, QuietHandler

JWKS_PATH = "/auth/v1/.well-known/jwks.json"
LEGACY_SECRET = "legacy-jwt-secret-for-tests-0123456789abcdef"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    public_pem: bytes = b""

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}


def rsa_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(kid, "RS256", private, pem)


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(kid, "ES256", private, pem)


@dataclass
class FakeAuth(LoopbackServer):
    keys: list[SigningKey] = field(default_factory=lambda: [rsa_key("rsa-1"), ec_key("ec-1")])
    # None: serve the keys; an int: answer that HTTP status; "hang": never answer.
    fault: int | str | None = None
    fetches: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        LoopbackServer.__init__(self, self._handler(), "fake-auth")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def token(
        self,
        user: str,
        *,
        key: SigningKey | None = None,
        kid: str | None = None,
        expires_in: float = 3600,
        **claims: Any,
    ) -> str:
        """An access token for ``user`` as Supabase makes one (override any claim)."""
        key = key or self.keys[0]
        now = int(time.time())
        payload = {
            "sub": user,
            "aud": "authenticated",
            "iss": self.issuer,
            "iat": now,
            "exp": now + int(expires_in),
            "role": "authenticated",
            "is_anonymous": False,  # Supabase marks anonymous sign-ins true
            **claims,
        }
        return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})

    def legacy_token(self, user: str, secret: str = LEGACY_SECRET, **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": user, "aud": "authenticated", "iss": self.issuer, "iat": now, "exp": now + 3600, **claims}
        return jwt.encode(payload, secret, algorithm="HS256")

    def _handler(self) -> type[QuietHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with fake.lock:
                    fake.fetches += 1
                    fault = fake.fault
                    body = {"keys": [k.jwk() for k in fake.keys]}
                if fault == "hang":
                    fake.stopping.wait(60)
                    return
                if self.path != JWKS_PATH:
                    self.send(404, {"message": "not found"})
                elif isinstance(fault, int):
                    self.send(fault, {"message": "unavailable"})
                else:
                    self.send(200, body)

        return Handler
