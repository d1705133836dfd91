"""The trust store: each institution's public signing keys (JWKS), with revocations.

One file per institution, `<INSTITUTION>.jwks.json`, a standard JWKS plus a `revoked`
list of key ids. Every key pins its algorithm (`alg`), so a token can never pick another
one (RFC 8725 §3.1). Validated as loaded; errors name the file and key.

Only a key that can verify and nothing else is loaded: a public signing key (no private
member, `use` "sig", `key_ops` with "verify"), of the exact type its `alg` names, its
coordinates canonical and on the curve. An Ed25519 key of small order is refused: with
one, a trivial signature verifies for any message, whoever signs it.

A running gateway follows the directory (`jisr pki issue`, `rotate`, `revoke`): within a
second of a change, or at once on SIGHUP (docs/pki.md).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.base import strict_json

log = logging.getLogger("jisr.trust")
ALGORITHMS = frozenset({"ES256", "EdDSA"})
# How stale the trust store may be: a lookup compares the directory with what was loaded
# at most this often (a few stat calls).
CHECK_EVERY_S = 1.0
# A key id not known yet (an institution issued a moment ago) is looked for again sooner.
MISS_RECHECK_S = 0.05
PublicKey = EllipticCurvePublicKey | Ed25519PublicKey
_INSTITUTION = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
SUFFIX = ".jwks.json"
# The (kty, crv) each pinned algorithm needs; any other pairing is refused.
_KEY_TYPES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}
# Private members of any JWK key type (RFC 7518 §6): a trust store holds public keys only.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# P-256's field prime (SEC 2): a coordinate at or above it is not canonical.
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
# Ed25519 (RFC 8032 §5.1): field prime and curve constant.
_ED_P = 2**255 - 19
_ED_D = -121665 * pow(121666, -1, _ED_P) % _ED_P
# y of the 8 points of order dividing 8: 0 (order 4), 1 (the identity), p - 1 (order 2),
# and the two of order 8. With the sign bit of x either way, and y = p, p + 1 (refused as
# non-canonical), these are libsodium's 14 small-order encodings.
_ED_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_ED_SMALL_ORDER_Y = frozenset({0, 1, _ED_P - 1, _ED_Y8, _ED_P - _ED_Y8})


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


@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: Mapping[tuple[str, str], TrustedKey]
    institutions: frozenset[str]
    stamp: tuple[tuple[str, int, int], ...]


class TrustStore:
    """Lookup of an institution's own keys by key id.

    Loaded from a directory (`load_dir`), it follows the directory: a newly issued
    institution, a new or revoked key is seen within `CHECK_EVERY_S` of the change (the
    files' sizes and times are compared at most that often, on lookup), or at once on
    `reload()` (SIGHUP). A directory that no longer loads keeps the keys that did, and says
    why in the log, once per change."""

    def __init__(
        self,
        keys: Mapping[tuple[str, str], TrustedKey],
        source: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._clock = clock
        self._snapshot = _Snapshot(
            dict(keys),
            frozenset(institution for institution, _ in keys),
            _stamp(source) if source else (),
        )
        self._checked = clock()
        self._lock = threading.Lock()

    @property
    def institutions(self) -> frozenset[str]:
        self._follow(CHECK_EVERY_S)
        return self._snapshot.institutions

    def get(self, institution: str, kid: str) -> TrustedKey | None:
        """The key `kid` of `institution`, or None: another institution's key never matches.
        A key not known yet is looked for again once the directory changed (a key issued
        a moment ago), at most every `MISS_RECHECK_S`."""
        self._follow(CHECK_EVERY_S)
        key = self._snapshot.keys.get((institution, kid))
        if key is None and self._follow(MISS_RECHECK_S):
            key = self._snapshot.keys.get((institution, kid))
        return key

    def reload(self) -> int:
        """Read the directory again now; the number of institutions trusted afterwards."""
        if self._source is not None:
            with self._lock:
                self._load(_stamp(self._source))
        return len(self._snapshot.institutions)

    def _follow(self, every: float) -> bool:
        """Reload if the directory changed, checking at most every `every` seconds;
        whether it was reloaded."""
        now = self._clock()
        if self._source is None or now - self._checked < every:
            return False
        with self._lock:
            if now - self._checked < every:
                return False
            self._checked = now
            stamp = _stamp(self._source)
            if stamp == self._snapshot.stamp:
                return False
            self._load(stamp)
            return True

    def _load(self, stamp: tuple[tuple[str, int, int], ...]) -> None:
        """Swap in the directory as it is now, or keep what was loaded (logged)."""
        assert self._source is not None
        try:
            keys = _read_dir(self._source)
        except TrustStoreError as exc:
            log.error("trust store not reloaded, keeping the keys loaded before: %s", exc)
            self._snapshot = _Snapshot(self._snapshot.keys, self._snapshot.institutions, stamp)
            return
        institutions = frozenset(institution for institution, _ in keys)
        self._snapshot = _Snapshot(keys, institutions, stamp)
        log.info("trust store reloaded", extra={"institutions": len(institutions)})


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a trust file is added, removed or rewritten."""
    stamp = []
    for file in sorted(path.glob(f"*{SUFFIX}")):
        try:
            info = file.stat()
        except OSError:
            continue
        stamp.append((file.name, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


def key_from_jwk(jwk: Mapping[str, Any]) -> tuple[PublicKey, str]:
    """A public key and its algorithm from a JWK that pins ES256 (P-256) or EdDSA (Ed25519).

    ValueError, saying what is wrong, for anything else: see the module's docstring.
    """
    alg = jwk.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise ValueError(f"alg must be one of {sorted(ALGORITHMS)}")
    _check_public_signing_key(jwk)
    kty, crv = _KEY_TYPES[alg]
    if jwk.get("kty") != kty or jwk.get("crv") != crv:
        raise ValueError(f"{alg} needs kty {kty} and crv {crv}")
    if alg == "ES256":
        return _p256_key(jwk), alg
    return _ed25519_key(jwk), alg


def _check_public_signing_key(jwk: Mapping[str, Any]) -> None:
    """No private member; `use` (if given) "sig"; `key_ops` (if given) including "verify"."""
    private = sorted(_PRIVATE_MEMBERS & jwk.keys())
    if private:
        raise ValueError(f"a trust store holds public keys only (found {', '.join(private)})")
    if "use" in jwk and jwk["use"] != "sig":
        raise ValueError('use must be "sig"')
    ops = jwk.get("key_ops", ["verify"])
    if not isinstance(ops, list) or "verify" not in ops:
        raise ValueError('key_ops must include "verify"')


def _coordinate(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    """Member `name` as exactly `size` bytes of canonical, unpadded base64url."""
    text = jwk.get(name)
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError(f"{name} must be unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != size or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError(f"{name} must be {size} bytes of canonical base64url")
    return raw


def _p256_key(jwk: Mapping[str, Any]) -> EllipticCurvePublicKey:
    """A P-256 point with canonical coordinates; `cryptography` checks it is on the curve."""
    x, y = _coordinate(jwk, "x", 32), _coordinate(jwk, "y", 32)
    if max(int.from_bytes(x, "big"), int.from_bytes(y, "big")) >= _P256_P:
        raise ValueError("ES256 key coordinates must be below the field prime")
    return EllipticCurvePublicKey.from_encoded_point(SECP256R1(), b"\x04" + x + y)


def _ed25519_key(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """An Ed25519 point that is canonical, on the curve, and not of small order.

    `cryptography` (OpenSSL) loads any 32 bytes, and a small-order key verifies a trivial
    signature for every message: the point is checked here, once, at load.
    """
    raw = _coordinate(jwk, "x", 32)
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _ED_P:
        raise ValueError("EdDSA key is not canonical (y is not below 2^255 - 19)")
    if y in _ED_SMALL_ORDER_Y:
        raise ValueError("EdDSA key is a point of small order (a trivial signature verifies)")
    # On the curve: x^2 = (y^2 - 1) / (d y^2 + 1) must have a root (Euler's criterion);
    # x^2 = 0 only for y = 1 or p - 1, both refused above.
    x2 = (y * y - 1) * pow(_ED_D * y * y + 1, _ED_P - 2, _ED_P) % _ED_P
    if pow(x2, (_ED_P - 1) // 2, _ED_P) != 1:
        raise ValueError("EdDSA key is not a point of Ed25519")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_dir(path: Path, *, clock: Callable[[], float] = time.monotonic) -> TrustStore:
    """Every `<INSTITUTION>.jwks.json` in `path`, followed as the directory changes."""
    return TrustStore(_read_dir(path), path, clock=clock)


def _read_dir(path: Path) -> dict[tuple[str, str], TrustedKey]:
    if not path.is_dir():
        raise TrustStoreError(f"{path}: trust store directory not found (run `jisr pki init`)")
    keys: dict[tuple[str, str], TrustedKey] = {}
    for file in sorted(path.glob(f"*{SUFFIX}")):
        institution = file.name.removesuffix(SUFFIX)
        if not _INSTITUTION.fullmatch(institution):
            raise TrustStoreError(f"{file}: file name must be <INSTITUTION>{SUFFIX}")
        for key in _load_file(file, institution):
            keys[(institution, key.kid)] = key
    return keys


def _load_file(file: Path, institution: str) -> list[TrustedKey]:
    try:
        doc = strict_json.loads(file.read_text(encoding="utf-8"))
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
