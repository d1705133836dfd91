"""The DCI envelope's `signature`: an HTTP-signature-like string over `header` + `message`.

The DCI standard gives only an example of the value (`Signature:  namespace="spdci",
kidId="{sender_id}|{unique_key_id}|{algorithm}", algorithm="ed25519", created=…, expires=…,
headers="(created) (expires) digest", signature="Base64(signing content)"`) and leaves
canonicalisation, digest and signing string unsaid, so Jisr fixes them (docs/dci.md):

    digest  = "SHA-256=" + base64(SHA-256(JCS({"header": header, "message": message})))
    signing = "(created): {created}\\n(expires): {expires}\\ndigest: {digest}"  (UTF-8)

JCS (RFC 8785) makes the digest a property of the JSON values, not of the bytes a
partner's serialiser happened to write: member order and whitespace do not matter, and
both sides hash what they parsed. The value is read strictly, by one grammar (see
`_parse`), before any key is looked up; a value read one way here and another way by the
signer is refused, never guessed at.

As for every token Jisr accepts (gateway/base/jws.py): the key is the caller's own, found
by the kid in `kidId` under the institution the caller authenticated as; the algorithm is
the one pinned on that key, never the value's choice; times are checked only once the
signature verified, so an unauthenticated value learns nothing but MALFORMED_TOKEN or
BAD_SIGNATURE. Messages name the parameter at fault, never the header's or message's
contents (they hold personal data).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ec import (
    ECDSA,
    SECP256R1,
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.base.errors import Reason
from gateway.base.jws import Keys, PublicKey, TokenError, Trusted, verify_signature

PrivateKey = EllipticCurvePrivateKey | Ed25519PrivateKey

NAMESPACE = "spdci"
HEADERS = "(created) (expires) digest"
# The DCI `algorithm` names accepted, each with the JOSE algorithm a trust-store key must
# pin for it. Exactly these two: an alias (es256, ecdsa-sha256) would be one more name a
# partner's tooling and ours could disagree on.
ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ALGORITHMS: Mapping[str, str] = {ED25519: "EdDSA", ECDSA_P256: "ES256"}
# The longest value read at all, checked before anything else. A value is about 270 chars
# plus its sender id and kid (370 with a 32-char institution id and a 64-char kid).
MAX_SIGNATURE_CHARS = 2048
# Clock skew allowed either way, and the longest a signature may be valid (as the request
# tokens', gateway/security/tokens.py).
SKEW_S = 30
MAX_LIFETIME_S = 300
# The deepest `header` or `message` may nest (objects and arrays), checked without
# recursion before canonicalising: a DCI message nests about ten deep, and the JCS encoder
# recurses once per level.
MAX_JSON_DEPTH = 64
SIGNATURE_BYTES = 64  # raw Ed25519, or ES256's r||s (32 bytes each), as in JWS

_PREFIX = re.compile(r"Signature:[ \t]+")
# A parameter: its name, "=", and a quoted value of printable ASCII with no quote and no
# backslash (so there is nothing to unescape, and nothing to unescape differently).
_PARAM = re.compile(r'([A-Za-z]+)="([ !#-\[\]-~]*)"')
_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")
_NAMES = ("namespace", "kidId", "algorithm", "created", "expires", "headers", "signature")
_SECONDS = re.compile(r"0|[1-9][0-9]{0,15}")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# What sign() puts in kidId: printable ASCII without the separator, quote or backslash.
_ID = re.compile(r"[!#-\[\]-{}~]+")


@dataclass(frozen=True)
class Verified:
    """Who signed an envelope, with which key and DCI algorithm, valid from when to when."""

    institution: str
    kid: str
    algorithm: str
    created: int
    expires: int


@dataclass(frozen=True)
class _Parsed:
    sender_id: str
    kid: str
    algorithm: str
    created: int
    expires: int
    signature: bytes


@dataclass(frozen=True)
class _Pinned:
    """One key given directly (verify_with), as the trust store would hold it."""

    alg: str
    key: PublicKey
    revoked: bool = False


class _KeySet:
    """A signer's keys by kid, for verify_with: whoever asks, only `institution` has any."""

    def __init__(self, institution: str, keys: Mapping[str, PublicKey]) -> None:
        self._institution = institution
        self._keys = {kid: _Pinned(_pinned_alg(key), key) for kid, key in keys.items()}

    def get(self, institution: str, kid: str) -> Trusted | None:
        return self._keys.get(kid) if institution == self._institution else None


def _malformed(why: str) -> TokenError:
    return TokenError(Reason.MALFORMED_TOKEN, why)


def _shape(*values: Any) -> tuple[bool, bool]:
    """(too deep, plain) of `values`, in one walk without recursion: too deep if any nests
    more than MAX_JSON_DEPTH containers; plain if it holds only dicts with ASCII string
    keys, lists, strings, booleans, None and integers within ±(2^53 - 1), the values whose
    JCS form is exactly the standard library's sorted, compact JSON (no float to format
    the ECMAScript way, no key whose UTF-16 order differs from its code points')."""
    stack: list[tuple[Any, int]] = [(value, 1) for value in values]
    plain = True
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if isinstance(value, Mapping):
            children: Any = value.values()
            plain = plain and kind is dict and all(type(k) is str and k.isascii() for k in value)
        elif isinstance(value, list | tuple):
            children = value
            plain = plain and kind is list
        else:
            if kind is int:
                plain = plain and -_SAFE_INT < value < _SAFE_INT
            elif not (kind is str or kind is bool or value is None):
                plain = False
            continue
        if depth > MAX_JSON_DEPTH:
            return True, False
        stack.extend((child, depth + 1) for child in children)
    return False, plain


_SAFE_INT = 2**53


def _canonical(envelope: dict[str, Any], plain: bool) -> bytes:
    """RFC 8785 bytes: the standard library's for plain values (five times faster, the
    same bytes: tests/unit/test_dci_signature.py compares them), rfc8785's otherwise."""
    if plain:
        try:
            text = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 refuses it, below
            pass
    return rfc8785.dumps(envelope)


def digest(header: Mapping[str, Any], message: Any) -> str:
    """`SHA-256=` and the standard base64 of SHA-256 over the JCS form of the envelope's
    `{"header": header, "message": message}`.

    TokenError MALFORMED_TOKEN if JCS cannot represent them (a non-finite float, an integer
    beyond 2^53, a lone surrogate, a key that is not a string, a value that is not JSON)
    or they nest deeper than MAX_JSON_DEPTH: an envelope no signer could have hashed the
    way we do.
    """
    too_deep, plain = _shape(header, message)
    if too_deep:
        raise _malformed(f"the header or message nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        canonical = _canonical({"header": dict(header), "message": message}, plain)
    except (ValueError, TypeError, RecursionError):
        raise _malformed("the header and message have no JSON canonical form (RFC 8785)") from None
    return "SHA-256=" + base64.b64encode(hashlib.sha256(canonical).digest()).decode("ascii")


def _signing_string(created: int, expires: int, digest_value: str) -> bytes:
    return f"(created): {created}\n(expires): {expires}\ndigest: {digest_value}".encode()


def sign(
    header: Mapping[str, Any],
    message: Any,
    *,
    sender_id: str,
    kid: str,
    key: PrivateKey,
    created: int,
    lifetime: int = MAX_LIFETIME_S,
) -> str:
    """The `signature` value for an envelope, by `sender_id`'s key `kid`.

    The algorithm follows from the key: Ed25519 signs `ed25519`, a P-256 key
    `ecdsa-p256-sha256`. ValueError for a key, id or lifetime verify() would refuse;
    TokenError MALFORMED_TOKEN for a header or message with no canonical form.
    """
    if isinstance(key, Ed25519PrivateKey):
        algorithm = ED25519
    elif isinstance(key.curve, SECP256R1):
        algorithm = ECDSA_P256
    else:
        raise ValueError("only Ed25519 and P-256 keys sign DCI envelopes")
    if not _ID.fullmatch(sender_id) or not _ID.fullmatch(kid):
        raise ValueError('sender_id and kid must be printable ASCII without |, " or \\')
    if not 0 < lifetime <= MAX_LIFETIME_S:
        raise ValueError(f"lifetime must be 1 to {MAX_LIFETIME_S} s")
    if created < 0:
        raise ValueError("created must be Unix seconds")
    expires = created + lifetime
    signed = _signing_string(created, expires, digest(header, message))
    if isinstance(key, Ed25519PrivateKey):
        raw = key.sign(signed)
    else:
        r, s = decode_dss_signature(key.sign(signed, ECDSA(SHA256())))
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return (
        f'Signature: namespace="{NAMESPACE}", kidId="{sender_id}|{kid}|{algorithm}", '
        f'algorithm="{algorithm}", created="{created}", expires="{expires}", '
        f'headers="{HEADERS}", signature="{base64.b64encode(raw).decode("ascii")}"'
    )


def _parameters(value: str) -> dict[str, str]:
    """`Signature:`, whitespace, then name="value" parameters separated by commas: each
    known name exactly once, nothing before, between or after but spaces and tabs around
    the commas."""
    prefix = _PREFIX.match(value)
    if prefix is None:
        raise _malformed('the signature must start with "Signature: "')
    params: dict[str, str] = {}
    pos = prefix.end()
    while True:
        param = _PARAM.match(value, pos)
        if param is None:
            raise _malformed('signature parameters must be name="value", unescaped')
        name, text = param.group(1), param.group(2)
        if name not in _NAMES:
            raise _malformed(f"signature parameters are {', '.join(_NAMES)} and no others")
        if name in params:
            raise _malformed(f"signature parameter {name} is repeated")
        params[name] = text
        pos = param.end()
        if pos == len(value):
            break
        separator = _SEPARATOR.match(value, pos)
        if separator is None:
            raise _malformed("signature parameters must be separated by commas")
        pos = separator.end()
    missing = [name for name in _NAMES if name not in params]
    if missing:
        raise _malformed(f"signature parameter {missing[0]} is missing")
    return params


def _seconds(params: Mapping[str, str], name: str) -> int:
    if not _SECONDS.fullmatch(params[name]):
        raise _malformed(f"signature parameter {name} must be decimal Unix seconds")
    return int(params[name])


def _signature_bytes(text: str) -> bytes:
    """Standard, padded, canonical base64 of exactly SIGNATURE_BYTES bytes."""
    if not _BASE64.fullmatch(text):
        raise _malformed("signature parameter signature must be standard base64")
    raw = base64.b64decode(text, validate=True)  # cannot fail: the pattern is base64's
    if base64.b64encode(raw).decode("ascii") != text or len(raw) != SIGNATURE_BYTES:
        raise _malformed(
            f"signature parameter signature must be the base64 of {SIGNATURE_BYTES} bytes"
        )
    return raw


def _parse(value: str) -> _Parsed:
    """Every parameter read and checked for form; nothing looked up yet."""
    if len(value) > MAX_SIGNATURE_CHARS:
        raise _malformed(f"the signature exceeds {MAX_SIGNATURE_CHARS} characters")
    params = _parameters(value)
    if params["namespace"] != NAMESPACE:
        raise _malformed(f'signature parameter namespace must be "{NAMESPACE}"')
    if params["headers"] != HEADERS:
        raise _malformed(f'signature parameter headers must be "{HEADERS}"')
    created, expires = _seconds(params, "created"), _seconds(params, "expires")
    raw = _signature_bytes(params["signature"])
    algorithm = params["algorithm"]
    if algorithm not in ALGORITHMS:
        raise TokenError(
            Reason.ALGORITHM_NOT_ALLOWED,
            f"signature parameter algorithm must be one of {', '.join(ALGORITHMS)}",
        )
    parts = params["kidId"].split("|")
    if len(parts) != 3 or not all(parts):
        raise _malformed("signature parameter kidId must be {sender_id}|{kid}|{algorithm}")
    sender_id, kid, kid_algorithm = parts
    if kid_algorithm != algorithm:
        raise _malformed("signature parameter kidId names another algorithm than algorithm")
    return _Parsed(sender_id, kid, algorithm, created, expires, raw)


def verify(
    value: object,
    header: Mapping[str, Any],
    message: Any,
    *,
    institution: str,
    keys: Keys,
    now: float,
) -> Verified:
    """Check an envelope's `signature` by one of `institution`'s keys (the institution the
    caller authenticated as); who signed it, and when, if it holds.

    TokenError, in the order checked: MISSING_SIGNATURE (None, empty, not a string);
    MALFORMED_TOKEN (the value's form); ALGORITHM_NOT_ALLOWED (not a DCI algorithm we
    accept); ISSUER_MISMATCH (kidId's sender is not header.sender_id or not
    `institution`); UNKNOWN_KEY, KEY_REVOKED, ALGORITHM_NOT_ALLOWED (not the key's pinned
    algorithm); MALFORMED_TOKEN (header and message have no canonical form);
    BAD_SIGNATURE; then TOKEN_NOT_YET_VALID, TOKEN_LIFETIME, TOKEN_EXPIRED.
    """
    if not isinstance(value, str) or not value:
        raise TokenError(Reason.MISSING_SIGNATURE, "the envelope has no signature")
    parsed = _parse(value)
    if parsed.sender_id != header.get("sender_id"):
        raise TokenError(Reason.ISSUER_MISMATCH, "kidId's sender is not header.sender_id")
    if parsed.sender_id != institution:
        raise TokenError(
            Reason.ISSUER_MISMATCH, "kidId's sender is not the institution authenticated"
        )
    trusted = keys.get(institution, parsed.kid)
    if trusted is None:
        raise TokenError(Reason.UNKNOWN_KEY, "kidId's key is not one of the sender's keys")
    if trusted.revoked:
        raise TokenError(Reason.KEY_REVOKED, "the signing key has been revoked")
    if ALGORITHMS[parsed.algorithm] != trusted.alg:
        raise TokenError(
            Reason.ALGORITHM_NOT_ALLOWED, f"this key signs with {_dci_name(trusted.alg)} only"
        )
    signed = _signing_string(parsed.created, parsed.expires, digest(header, message))
    if not verify_signature(trusted.key, trusted.alg, parsed.signature, signed):
        raise TokenError(Reason.BAD_SIGNATURE, "the signature does not verify")
    _check_times(parsed.created, parsed.expires, now)
    return Verified(institution, parsed.kid, parsed.algorithm, parsed.created, parsed.expires)


def _dci_name(alg: str) -> str:
    """The DCI name of a pinned JOSE algorithm, for messages."""
    return next((name for name, pinned in ALGORITHMS.items() if pinned == alg), alg)


def _check_times(created: int, expires: int, now: float) -> None:
    """`created` at most SKEW_S ahead of `now`; a lifetime of 1 to MAX_LIFETIME_S;
    `expires` more than SKEW_S behind `now`."""
    if created > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "signature parameter created is in the future")
    if not 0 < expires - created <= MAX_LIFETIME_S:
        raise TokenError(
            Reason.TOKEN_LIFETIME,
            f"signature parameter expires must be after created by at most {MAX_LIFETIME_S} s",
        )
    if expires <= now - SKEW_S:
        raise TokenError(Reason.TOKEN_EXPIRED, "the signature has expired")


def _pinned_alg(key: PublicKey) -> str:
    if isinstance(key, Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1):
        return "ES256"
    raise ValueError("only Ed25519 and P-256 keys verify DCI envelopes")


def verify_with(
    value: object,
    header: Mapping[str, Any],
    message: Any,
    *,
    sender_id: str,
    keys: Mapping[str, PublicKey],
    now: float,
) -> Verified:
    """verify() against keys given directly: a partner checking the gateway's signed
    responses and callbacks with the gateway's JWKS.

    `sender_id` is the signer expected (the gateway's id); `keys` its public keys by kid
    (e.g. `{jwk["kid"]: key_from_jwk(jwk)[0]}`, gateway/security/trust.py), each pinned to
    the algorithm its type allows (P-256: ecdsa-p256-sha256, Ed25519: ed25519). Same
    checks and TokenError reasons as verify(); ValueError for a key of another type.
    """
    return verify(
        value, header, message, institution=sender_id, keys=_KeySet(sender_id, keys), now=now
    )
