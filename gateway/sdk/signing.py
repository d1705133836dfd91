"""The partner side of the wire contract: request and batch tokens signed over exact bytes.

Used by the client SDK and by tests that must craft tokens; the gateway never signs with
an institution's key.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.base.jws import body_hash
from gateway.security.tokens import BATCH_TYP, REQUEST_TYP

PrivateKey = EllipticCurvePrivateKey | Ed25519PrivateKey
DEFAULT_LIFETIME_S = 60


@dataclass(frozen=True, slots=True)
class Signer:
    """An institution's signing key, its key id and pinned algorithm, and who calls."""

    institution: str
    kid: str
    alg: str
    key: PrivateKey
    audience: str
    sub: str = "jisr-client"

    @classmethod
    def from_files(
        cls, institution: str, signing_key: Path, signing_json: Path, audience: str, sub: str
    ) -> Signer:
        """Load `signing.key` (PEM) and `signing.json` ({kid, alg}) issued by `jisr pki`."""
        key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
        if not isinstance(key, EllipticCurvePrivateKey | Ed25519PrivateKey):
            raise ValueError(f"{signing_key}: not an ES256 or EdDSA private key")
        meta = json.loads(signing_json.read_text(encoding="utf-8"))
        return cls(institution, meta["kid"], meta["alg"], key, audience, sub)

    def request_token(
        self,
        method: str,
        purpose: str,
        body: bytes,
        *,
        now: float | None = None,
        jti: str | None = None,
        lifetime: int = DEFAULT_LIFETIME_S,
    ) -> str:
        """The `x-jisr-signature` value for one call whose request bytes are `body`."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.institution,
            "sub": self.sub,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + lifetime,
            "jti": jti or secrets.token_urlsafe(18),
            "purpose": purpose,
            "method": method,
            "rh": body_hash(body),
        }
        return jwt.encode(
            claims, self.key, algorithm=self.alg, headers={"typ": REQUEST_TYP, "kid": self.kid}
        )

    def batch_token(self, jti: str, seq: int, batch: bytes) -> str:
        """The `batch_signature` of batch number `seq` of the call `jti`."""
        return jwt.encode(
            {"jti": jti, "seq": seq, "rh": body_hash(batch)},
            self.key,
            algorithm=self.alg,
            headers={"typ": BATCH_TYP, "kid": self.kid},
        )
