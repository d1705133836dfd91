"""The trust store: each institution's public signing keys (JWKS), with revocations.

One file per institution, `<INSTITUTION>.jwks.json`, a standard JWKS plus a `revoked`
list of key ids. Every key pins its algorithm (`alg`), so a token can never pick another
one (RFC 8725 §3.1). Loaded and validated once at start; errors name the file and key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

ALGORITHMS = frozenset({"ES256", "EdDSA"})
PublicKey = EllipticCurvePublicKey | Ed25519PublicKey
_INSTITUTION = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
SUFFIX = ".jwks.json"


class TrustStoreError(ValueError):
    """The trust store is invalid; the message names the file and key at fault."""


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One institution's public signing key, its pinned algorithm, and whether revoked."""

    institution: str
    kid: str
    alg: str
    key: PublicKey
    revoked: bool


class TrustStore:
    """Lookup of an institution's own keys by key id."""

    def __init__(self, keys: Mapping[tuple[str, str], TrustedKey]) -> None:
        self._keys = dict(keys)
        self.institutions = frozenset(institution for institution, _ in keys)

    def get(self, institution: str, kid: str) -> TrustedKey | None:
        """The key `kid` of `institution`, or None: another institution's key never matches."""
        return self._keys.get((institution, kid))


def key_from_jwk(jwk: Mapping[str, Any]) -> tuple[PublicKey, str]:
    """A public key and its algorithm from a JWK that pins ES256 (P-256) or EdDSA (Ed25519)."""
    alg = jwk.get("alg")
    if alg not in ALGORITHMS:
        raise ValueError(f"alg must be one of {sorted(ALGORITHMS)}")
    if "d" in jwk:
        raise ValueError("a trust store holds public keys only")
    text = json.dumps(dict(jwk))
    if alg == "ES256":
        key = ECAlgorithm.from_jwk(text)
        if not isinstance(key, EllipticCurvePublicKey) or not isinstance(key.curve, SECP256R1):
            raise ValueError("ES256 needs a P-256 public key")
        return key, alg
    okp = OKPAlgorithm.from_jwk(text)
    if not isinstance(okp, Ed25519PublicKey):
        raise ValueError("EdDSA needs an Ed25519 public key")
    return okp, alg


def load_dir(path: Path) -> TrustStore:
    """Every `<INSTITUTION>.jwks.json` in `path`."""
    if not path.is_dir():
        raise TrustStoreError(f"{path}: trust store directory not found (run `jisr pki init`)")
    keys: dict[tuple[str, str], TrustedKey] = {}
    for file in sorted(path.glob(f"*{SUFFIX}")):
        institution = file.name.removesuffix(SUFFIX)
        if not _INSTITUTION.fullmatch(institution):
            raise TrustStoreError(f"{file}: file name must be <INSTITUTION>{SUFFIX}")
        for key in _load_file(file, institution):
            keys[(institution, key.kid)] = key
    return TrustStore(keys)


def _load_file(file: Path, institution: str) -> list[TrustedKey]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrustStoreError(f"{file}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise TrustStoreError(f"{file}: a JWKS needs a 'keys' array")
    revoked = doc.get("revoked", [])
    if not isinstance(revoked, list) or not all(isinstance(k, str) for k in revoked):
        raise TrustStoreError(f"{file}: 'revoked' must be a list of key ids")
    out: list[TrustedKey] = []
    seen: set[str] = set()
    for i, jwk in enumerate(doc["keys"]):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or not kid:
            raise TrustStoreError(f"{file}: keys[{i}].kid: every key needs a key id")
        if kid in seen:
            raise TrustStoreError(f"{file}: keys[{i}].kid: {kid} appears twice")
        seen.add(kid)
        try:
            key, alg = key_from_jwk(jwk)
        except (ValueError, KeyError) as exc:
            raise TrustStoreError(f"{file}: keys[{i}] ({kid}): {exc}") from exc
        out.append(TrustedKey(institution, kid, alg, key, kid in revoked))
    return out
