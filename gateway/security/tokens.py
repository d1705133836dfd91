"""Request tokens: the compact JWS in `x-jisr-signature`, checked as the wire contract says.

Pure: the caller passes the certificate's institution, the called method, the exact
request bytes and the time. Follows RFC 8725: the algorithm is the one pinned on the key
(never the header's choice), keys come only from the trust store (never from jku/jwk/x5u
headers), the token type is explicit, every claim is required and checked.

Before any of that, the token is bounded: its size first (MAX_TOKEN_BYTES), then each JSON
part's nesting depth (MAX_JSON_DEPTH) before it is decoded, so no token can make the
decoder recurse; a part that repeats a member name, or holds a lone surrogate, is refused
rather than read one way here and another way by the signer. Every string claim has a
precise character set and length (docs/security.md §2).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.base.errors import Reason
from gateway.security.trust import PublicKey, TrustStore

REQUEST_TYP = "jisr-req+jwt"
BATCH_TYP = "jisr-batch+jwt"
MAX_LIFETIME_S = 300
SKEW_S = 30
REQUIRED = ("iss", "sub", "aud", "iat", "exp", "jti", "purpose", "method", "rh")
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


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the contract allows in one string claim, and how a partner is told so."""

    pattern: re.Pattern[str]
    says: str


# Printable ASCII only, each claim its own set and length: no control character, no
# surrogate, nothing two stores could fold into the same key (a jti with NUL and one
# with U+FFFD would otherwise meet in the replay index).
CLAIM_SHAPES: Mapping[str, _Shape] = {
    "iss": _Shape(re.compile(r"[A-Z][A-Z0-9_]{1,31}"), "an institution id, [A-Z][A-Z0-9_]{1,31}"),
    "sub": _Shape(re.compile(r"[A-Za-z0-9._:@-]{1,64}"), "1 to 64 of A-Z a-z 0-9 . _ : @ -"),
    "jti": _Shape(re.compile(r"[A-Za-z0-9_-]{16,128}"), "16 to 128 of A-Z a-z 0-9 _ -"),
    "purpose": _Shape(re.compile(r"[A-Z][A-Z0-9_]{1,63}"), "a purpose, [A-Z][A-Z0-9_]{1,63}"),
    "method": _Shape(
        re.compile(r"/[A-Za-z][A-Za-z0-9_.]{0,127}/[A-Za-z][A-Za-z0-9_]{0,63}"),
        "a full method name, /package.Service/Method",
    ),
    "rh": _Shape(
        re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]"),
        "an unpadded base64url SHA-256 (43 characters)",
    ),
}


class TokenError(Exception):
    """A token that must be refused, with the stable reason partners see."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestClaims:
    """The checked claims of one request token."""

    iss: str
    sub: str
    jti: str
    purpose: str
    method: str
    rh: str
    iat: int
    exp: int
    kid: str


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


def _malformed(why: str = "the signature is not a compact JWS") -> TokenError:
    return TokenError(Reason.MALFORMED_TOKEN, why)


def _compact(token: str) -> tuple[str, str, str]:
    """The three parts of a compact JWS, its size checked before anything else is read."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(Reason.TOKEN_TOO_LARGE, f"the token exceeds {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise _malformed()
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


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object; a repeated member name is refused, never resolved "last wins"."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _malformed("the token repeats a member name")
    return members


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259): refused, not read as floats."""
    raise ValueError(f"{name} is not JSON")


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
        raise _malformed(f"the token nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _malformed() from None
    if not isinstance(value, dict):
        raise _malformed()
    if "\\u" in text and _holds_surrogate(value):
        raise _malformed(f"token member {_holder(value)} holds a lone surrogate")
    return value


def _holder(members: Mapping[str, Any]) -> str:
    """The name of the member that holds a surrogate, if it can be written in a message."""
    for name, value in members.items():
        if _holds_surrogate(value) and _PRINTABLE_NAME.fullmatch(name):
            return name
    return "(a name that cannot be printed)"


def _verify_signature(key: PublicKey, alg: str, signature: bytes, signed: bytes) -> bool:
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
    token: str, typ: str, institution: str, trust: TrustStore
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
        raise _malformed("token headers may not carry keys or crit")
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
    if not _verify_signature(trusted.key, trusted.alg, signature, signing_input):
        raise TokenError(Reason.BAD_SIGNATURE, "the signature does not verify")
    return _json_object(_segment(claims_part)), kid


def _shaped(claims: Mapping[str, Any], name: str) -> str:
    """A string claim that matches its rule in CLAIM_SHAPES; the refusal names the claim."""
    value = claims.get(name)
    shape = CLAIM_SHAPES[name]
    if not isinstance(value, str) or not shape.pattern.fullmatch(value):
        raise _malformed(f"claim {name} must be {shape.says}")
    return value


def _shaped_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """Every required claim present, and every string claim in its shape, before any is used."""
    missing = [name for name in REQUIRED if name not in claims]
    if missing:
        raise _malformed(f"token lacks claim {missing[0]}")
    return {name: _shaped(claims, name) for name in CLAIM_SHAPES}


def _int(claims: Mapping[str, Any], name: str) -> int:
    """A JSON integer claim: `true` and `1.0` compare equal to 1 in Python, but are not it."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"claim {name} must be a whole number")
    return value


def _check_audience(aud: object, audience: str) -> None:
    """`aud` must be this gateway's id, as one string.

    A list is refused even if it names this gateway: the contract addresses each token to
    one gateway, and a token addressed to several could be spent at each of them.
    """
    if not isinstance(aud, str):
        raise _malformed("claim aud must be one string, the gateway id")
    if aud != audience:
        raise TokenError(Reason.WRONG_AUDIENCE, "the token is not addressed to this gateway")


def _check_times(claims: Mapping[str, Any], now: float) -> tuple[int, int]:
    """`iat` and `exp`, once the time claims agree with `now`.

    `iat` and `nbf` (optional) at most SKEW_S ahead of `now`, a lifetime of 1 to
    MAX_LIFETIME_S, `exp` at most SKEW_S behind `now`: every bound inclusive, both sides
    of each pinned by tests.
    """
    iat, exp = _int(claims, "iat"), _int(claims, "exp")
    nbf = _int(claims, "nbf") if "nbf" in claims else None
    if iat > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "iat is in the future")
    if nbf is not None and nbf > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "nbf is in the future")
    if exp <= iat or exp - iat > MAX_LIFETIME_S:
        raise TokenError(
            Reason.TOKEN_LIFETIME, f"exp must be after iat by at most {MAX_LIFETIME_S} s"
        )
    if exp < now - SKEW_S:
        raise TokenError(Reason.TOKEN_EXPIRED, "the token has expired")
    return iat, exp


def verify_request(
    token: str,
    *,
    institution: str,
    method: str,
    body: bytes | None,
    audience: str,
    now: float,
    trust: TrustStore,
) -> RequestClaims:
    """All checks of the wire contract except replay, which needs shared state.

    `body` None defers the `rh` check: a stream's token covers its first message, which
    has not arrived when the call starts (see `check_body`).
    """
    claims, kid = signed_claims(token, REQUEST_TYP, institution, trust)
    text = _shaped_claims(claims)
    if text["iss"] != institution:
        raise TokenError(Reason.ISSUER_MISMATCH, "iss is not the certificate's institution")
    _check_audience(claims["aud"], audience)
    iat, exp = _check_times(claims, now)
    if text["method"] != method:
        raise TokenError(Reason.METHOD_MISMATCH, "the token was issued for another method")
    if body is not None:
        check_body(text["rh"], body)
    return RequestClaims(
        iss=text["iss"],
        sub=text["sub"],
        jti=text["jti"],
        purpose=text["purpose"],
        method=method,
        rh=text["rh"],
        iat=iat,
        exp=exp,
        kid=kid,
    )


def check_body(rh: str, body: bytes) -> None:
    """The token's `rh` must be the hash of exactly these bytes."""
    if rh != body_hash(body):
        raise TokenError(Reason.BODY_MISMATCH, "rh does not match the request bytes")


def unverified_issuer(token: str) -> str:
    """The `iss` a token claims, before any check (plaintext development mode only).

    Read by the same strict parser as a verified token (size, depth, unique names, shape),
    so this mode is no back door to the decoder.
    """
    header_part, claims_part, _ = _compact(token)
    _json_object(_segment(header_part))
    return _shaped(_json_object(_segment(claims_part)), "iss")


def verify_batch(
    token: str, *, institution: str, jti: str, seq: int, batch: bytes, trust: TrustStore
) -> str:
    """Check one batch's signature (same key rules), bound to the call and its position.

    `seq` must be a whole number: JSON `true` or `1.0` is not position 1.
    """
    claims, _ = signed_claims(token, BATCH_TYP, institution, trust)
    position = _int(claims, "seq")
    if claims.get("jti") != jti or position != seq:
        raise TokenError(Reason.BATCH_MISMATCH, "batch signature is for another call or position")
    rh = body_hash(batch)
    if claims.get("rh") != rh:
        raise TokenError(Reason.BODY_MISMATCH, "rh does not match the batch bytes")
    return rh


class ReplayGuard:
    """Remembers (iss, jti) until well after the token expires; a second use is refused.

    In-process. Across replicas the durable audit record's unique (iss, jti) index is the
    shared check (docs/security.md); this guard answers first and cheaply. Expired entries
    leave a few at a time, oldest first, so no request ever waits for a full sweep.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()
        self._lock = threading.Lock()
        self._clock = clock

    def first_use(self, iss: str, jti: str, exp: int) -> bool:
        """True the first time (iss, jti) is seen within its retention, False after."""
        now = self._clock()
        key = (iss, jti)
        with self._lock:
            for _ in range(8):
                if not self._order or self._order[0][0] > now:
                    break
                _, old = self._order.popleft()
                if self._seen.get(old, now + 1) <= now:
                    del self._seen[old]
            if key in self._seen:
                return False
            keep_until = exp + 2 * SKEW_S
            self._seen[key] = keep_until
            self._order.append((keep_until, key))
            return True
