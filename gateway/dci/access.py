"""Bearer tokens of the DCI facade: what `/oauth2/client/token` issues and every
`/registry/*` call must carry (docs/dci.md, "Tokens").

A token is a JWT (RFC 9068 profile, `typ: at+jwt`) signed ES256 by the gateway's own key:
the facade verifies its own tokens with its public key, so nothing is stored per token and
several facade processes accept each other's. It names the institution (`sub`) and the
client (`client_id`); it lives `lifetime` seconds (300 by default) and is not refreshed
(RFC 6749 §4.4.3): a client asks again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)

from gateway.dci.clients import Client

TYP = "at+jwt"
AUDIENCE = "jisr-dci"
SKEW_S = 30
MAX_TOKEN_CHARS = 4096
MAX_CACHED = 10_000


class AccessError(Exception):
    """The bearer token is missing, malformed, not ours or expired (a 401)."""


@dataclass(frozen=True, slots=True)
class Access:
    """Who a verified token speaks for."""

    institution: str
    client_id: str
    expires: int


@dataclass(frozen=True, slots=True)
class Issuer:
    """Issues and checks tokens with the gateway's key (ES256)."""

    key: EllipticCurvePrivateKey
    kid: str
    gateway_id: str
    lifetime: int = 300
    # Tokens verified already, until they expire: a partner sends the same token with
    # every call for minutes, and an ES256 verification is the dearest step of the check.
    _verified: dict[str, Access] = field(default_factory=dict, compare=False, repr=False)

    @property
    def public(self) -> EllipticCurvePublicKey:
        return self.key.public_key()

    def issue(self, client: Client, now: int) -> str:
        claims = {
            "iss": self.gateway_id,
            "aud": AUDIENCE,
            "sub": client.institution,
            "client_id": client.client_id,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        headers = {"typ": TYP, "kid": self.kid}
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)

    def check(self, authorization: str | None, now: int) -> Access:
        """The Access an `Authorization: Bearer …` header grants; AccessError otherwise."""
        if not authorization:
            raise AccessError("an Authorization: Bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            raise AccessError("the Authorization header must be: Bearer <token>")
        known = self._verified.get(token)
        if known is not None and now < known.expires + SKEW_S:
            return known
        access = self._verify(token)
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[token] = access
        return access

    def _verify(self, token: str) -> Access:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != TYP or header.get("kid") != self.kid:
                raise AccessError("not a token of this facade")
            claims = jwt.decode(
                token,
                self.public,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=self.gateway_id,
                leeway=SKEW_S,
                options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise AccessError("the token has expired: ask /oauth2/client/token again") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AccessError("the token is not valid") from None
        institution, client_id = claims.get("sub"), claims.get("client_id")
        if not isinstance(institution, str) or not isinstance(client_id, str):
            raise AccessError("the token is not valid")
        return Access(institution, client_id, int(claims["exp"]))
