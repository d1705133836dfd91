"""Signed JSON, strictly: the compact JWS that request tokens, batch tokens and consent
artefacts all are (RFC 7515, RFC 8725).

One reading for every signed document Jisr accepts, below everything that checks claims:
the token's size first (MAX_TOKEN_BYTES), then each JSON part's nesting depth
(MAX_JSON_DEPTH) before it is decoded, so no token can make the decoder recurse; a part
that repeats a member name, or holds a lone surrogate, is refused rather than read one
way here and another way by the signer. The key comes from the caller's `Keys` (the trust
store) by the header's `kid`, the algorithm is the one pinned on that key, never the
header's choice, and no header may carry a key (jku/jwk/x5u/x5c) or `crit`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.base import strict_json
from gateway.base.errors import Reason

PublicKey = EllipticCurvePublicKey | Ed25519PublicKey

# The largest token accepted, checked before anything else. A token whose every claim is
# as long as its rule below allows is about 1.1 KiB (ES256 or EdDSA, tests pin it); an
# SDK token is about 550. Tokens are ASCII (anything else is malformed): chars are bytes.
MAX_TOKEN_BYTES = 2048
# The deepest a token's header or claims may nest: the contract's are flat objects (1);
# the rest is room for extension claims, and far below what makes the decoder recurse.
MAX_JSON_DEPTH = 4
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit"})
# Inside a JSON string nothing nests; outside one, only these four bytes open and close.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PRINTABLE_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")


class Trusted(Protocol):
    """A public key the signer's institution registered, its pinned algorithm, and
    whether it was revoked (gateway/security/trust.py's TrustedKey)."""

    @property
    def alg(self) -> str: ...

    @property
    def key(self) -> PublicKey: ...

    @property
    def revoked(self) -> bool: ...


class Keys(Protocol):
    """Where a signer's keys are looked up: one institution's keys, by key id."""

    def get(self, institution: str, kid: str) -> Trusted | None: ...


class TokenError(Exception):
    """A token that must be refused, with the stable reason partners see."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def body_hash(data: bytes) -> str:
    """base64url (unpadded) SHA-256 of exact bytes: the `rh`/`sh` of the wire contract."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _segment(text: str) -> bytes:
    """Strict base64url (RFC 7515: no padding, URL-safe alphabet only)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS") from None


def malformed(why: str = "the signature is not a compact JWS") -> TokenError:
    return TokenError(Reason.MALFORMED_TOKEN, why)


def _compact(token: str) -> tuple[str, str, str]:
    """The three parts of a compact JWS, its size checked before anything else is read."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(Reason.TOKEN_TOO_LARGE, f"the token exceeds {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise malformed()
    return parts[0], parts[1], parts[2]


def _shallow(data: bytes) -> bool:
    """True if `data` nests at most MAX_JSON_DEPTH deep, found without decoding it.

    A contract token has two brackets in all, so counting them (in C) settles almost every
    token; otherwise strings are cut out and the brackets left are walked. Up to the first
    syntax error the walk's depth is the decoder's, and the decoder stops there.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return True
    depth = 0
    for byte in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > MAX_JSON_DEPTH:
            return False
    return True


def _holds_surrogate(value: object) -> bool:
    """True if a string anywhere in `value`, member names included, holds a surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_surrogate(k) or _holds_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_surrogate(item) for item in value)
    return False


def _json_object(data: bytes) -> dict[str, Any]:
    """A token part as one JSON object, strictly: shallow, UTF-8, unique names, no surrogates.

    Decoding as UTF-8 here (not json's own guess) refuses UTF-16/32 and encoded
    surrogates; a lone surrogate can then come only from a \\u escape, so the walk that
    looks for one runs only when the text has an escape.
    """
    if not _shallow(data):
        raise malformed(f"the token nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = data.decode("utf-8")
        value = strict_json.loads(text)
    except strict_json.RepeatedMemberError:
        raise malformed("the token repeats a member name") from None
    except (ValueError, RecursionError):
        raise malformed() from None
    if not isinstance(value, dict):
        raise malformed()
    if "\\u" in text and _holds_surrogate(value):
        raise malformed(f"token member {_holder(value)} holds a lone surrogate")
    return value


def _holder(members: Mapping[str, Any]) -> str:
    """The name of the member that holds a surrogate, if it can be written in a message."""
    for name, value in members.items():
        if _holds_surrogate(value) and _PRINTABLE_NAME.fullmatch(name):
            return name
    return "(a name that cannot be printed)"


def verify_signature(key: PublicKey, alg: str, signature: bytes, signed: bytes) -> bool:
    """ES256 (raw r||s, 64 bytes) or EdDSA (Ed25519) over the JWS signing input."""
    try:
        if alg == "ES256":
            if len(signature) != 64 or not isinstance(key, EllipticCurvePublicKey):
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), signed, ECDSA(SHA256()))
            return True
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, signed)
            return True
    except InvalidSignature:
        return False
    return False


def signed_claims(
    token: str, typ: str, institution: str, trust: Keys
) -> tuple[dict[str, Any], str]:
    """Check the header and signature by one of `institution`'s keys; claims and key id.

    Parsed once, verified with `cryptography` directly: pyjwt parsed each token twice and
    cost about twice as much per exchange (docs/performance.md).
    """
    header_part, claims_part, signature_part = _compact(token)
    header = _json_object(_segment(header_part))
    if header.get("typ") != typ:
        raise TokenError(Reason.WRONG_TOKEN_TYPE, f"token typ must be {typ}")
    if _FORBIDDEN_HEADERS & header.keys():
        raise malformed("token headers may not carry keys or crit")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError(Reason.UNKNOWN_KEY, "token names no key id")
    trusted = trust.get(institution, kid)
    if trusted is None:
        raise TokenError(Reason.UNKNOWN_KEY, "the key id is not one of the caller's keys")
    if trusted.revoked:
        raise TokenError(Reason.KEY_REVOKED, "the signing key has been revoked")
    if header.get("alg") != trusted.alg:
        raise TokenError(Reason.ALGORITHM_NOT_ALLOWED, f"this key signs with {trusted.alg} only")
    signature = _segment(signature_part)
    signing_input = f"{header_part}.{claims_part}".encode("ascii")
    if not verify_signature(trusted.key, trusted.alg, signature, signing_input):
        raise TokenError(Reason.BAD_SIGNATURE, "the signature does not verify")
    return _json_object(_segment(claims_part)), kid


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read as strictly as a signed token's but with no key: only for
    a mode that trusts its network (insecure plaintext), never a back door to the
    decoder."""
    header_part, claims_part, _ = _compact(token)
    return _json_object(_segment(header_part)), _json_object(_segment(claims_part))
