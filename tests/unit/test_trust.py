"""The trust store loads public signing keys that can only verify, and refuses every other."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from gateway.security.trust import (
    CHECK_EVERY_S,
    MISS_RECHECK_S,
    TrustStore,
    TrustStoreError,
    key_from_jwk,
    load_dir,
)

ED_P = 2**255 - 19
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1

# libsodium's small-order blocklist (ed25519_ref10.c): seven y values, each compared with the
# sign bit of x ignored, so fourteen encodings. Copied from there, not derived from our code.
_SODIUM_BLOCKLIST = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # 0 (order 4)
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1 (order 1)
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1 (order 2)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p (= 0)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p + 1 (= 1)
]
SMALL_ORDER = [bytes.fromhex(h) for h in _SODIUM_BLOCKLIST] + [
    bytes.fromhex(h)[:31] + bytes([bytes.fromhex(h)[31] | 0x80]) for h in _SODIUM_BLOCKLIST
]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ed_raw(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed_jwk(raw: bytes | None = None, **extra: Any) -> dict[str, Any]:
    if raw is None:
        raw = ed_raw(ed25519.Ed25519PrivateKey.generate().public_key())
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": "k-ed", "alg": "EdDSA", **extra}


def ec_jwk(**extra: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": "k-ec", "alg": "ES256", **extra}


def load(directory: Path, *jwks: dict[str, Any]) -> TrustStore:
    (directory / "CNSS.jwks.json").write_text(json.dumps({"keys": list(jwks)}))
    return load_dir(directory)


def refusal(directory: Path, jwk: dict[str, Any]) -> str:
    """The loader's message for a trust file holding `jwk`; it names the file and the key."""
    with pytest.raises(TrustStoreError) as err:
        load(directory, jwk)
    message = str(err.value)
    assert "CNSS.jwks.json" in message
    assert f"({jwk['kid']})" in message
    return message


def test_a_fresh_ed25519_key_loads(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    trusted = load(tmp_path, ed_jwk(ed_raw(key))).get("CNSS", "k-ed")
    assert trusted is not None
    assert trusted.alg == "EdDSA"
    assert isinstance(trusted.key, ed25519.Ed25519PublicKey)
    assert ed_raw(trusted.key) == ed_raw(key)


def test_an_ed25519_key_whose_x_is_negative_loads() -> None:
    """The sign bit of x is part of a valid encoding, not a sign of a small-order point."""
    raw = next(
        r
        for r in (ed_raw(ed25519.Ed25519PrivateKey.generate().public_key()) for _ in range(200))
        if r[31] & 0x80
    )
    key, alg = key_from_jwk(ed_jwk(raw))
    assert alg == "EdDSA"
    assert isinstance(key, ed25519.Ed25519PublicKey)
    assert ed_raw(key) == raw


def test_a_fresh_p256_key_loads(tmp_path: Path) -> None:
    trusted = load(tmp_path, ec_jwk(use="sig", key_ops=["verify"])).get("CNSS", "k-ec")
    assert trusted is not None
    assert trusted.alg == "ES256"
    assert isinstance(trusted.key, ec.EllipticCurvePublicKey)


def test_openssl_would_verify_a_trivial_signature_by_the_identity_key() -> None:
    """Why small-order keys must be refused at load: the library itself does not."""
    identity = bytes.fromhex(_SODIUM_BLOCKLIST[1])
    ed25519.Ed25519PublicKey.from_public_bytes(identity).verify(identity + bytes(32), b"any")


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=lambda raw: raw.hex()[:8] + raw.hex()[-2:])
def test_every_small_order_ed25519_encoding_is_refused(tmp_path: Path, raw: bytes) -> None:
    message = refusal(tmp_path, ed_jwk(raw))
    assert "small order" in message or "not canonical" in message


def test_a_non_canonical_ed25519_y_is_refused(tmp_path: Path) -> None:
    """y = p + 3 spells the valid point y = 3 a second way: one key, two encodings."""
    raw = (ED_P + 3).to_bytes(32, "little")
    assert "not canonical" in refusal(tmp_path, ed_jwk(raw))
    assert key_from_jwk(ed_jwk((3).to_bytes(32, "little")))  # the canonical spelling loads


def test_an_ed25519_y_that_is_no_point_of_the_curve_is_refused(tmp_path: Path) -> None:
    """y = 2: (y^2 - 1) / (d y^2 + 1) has no square root mod p, so no x exists."""
    raw = (2).to_bytes(32, "little")
    assert "not a point of Ed25519" in refusal(tmp_path, ed_jwk(raw))


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_a_jwk_carrying_a_private_member_is_refused(tmp_path: Path, member: str) -> None:
    assert "public keys only" in refusal(tmp_path, ec_jwk(**{member: "AQAB"}))


def test_an_okp_jwk_carrying_its_private_key_is_refused(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(private, as_dict=True)
    assert "public keys only" in refusal(tmp_path, {**jwk, "kid": "k-ed", "alg": "EdDSA"})


@pytest.mark.parametrize("use", ["enc", "", "SIG", ["sig"]])
def test_a_jwk_whose_use_is_not_sig_is_refused(tmp_path: Path, use: object) -> None:
    assert 'use must be "sig"' in refusal(tmp_path, ec_jwk(use=use))


@pytest.mark.parametrize("ops", [["sign"], [], ["encrypt", "decrypt"], "verify"])
def test_a_jwk_whose_key_ops_lack_verify_is_refused(tmp_path: Path, ops: object) -> None:
    assert 'key_ops must include "verify"' in refusal(tmp_path, ec_jwk(key_ops=ops))


@pytest.mark.parametrize(
    ("alg", "kty", "crv"),
    [
        ("ES256", "OKP", "Ed25519"),
        ("ES256", "EC", "P-384"),
        ("ES256", "EC", "secp256k1"),
        ("ES256", "EC", None),
        ("EdDSA", "EC", "P-256"),
        ("EdDSA", "OKP", "Ed448"),
        ("EdDSA", "OKP", "X25519"),
        ("EdDSA", "RSA", None),
    ],
)
def test_an_alg_with_another_key_type_or_curve_is_refused(
    tmp_path: Path, alg: str, kty: str, crv: str | None
) -> None:
    jwk = {**(ec_jwk() if alg == "ES256" else ed_jwk()), "kty": kty, "crv": crv}
    assert "needs kty" in refusal(tmp_path, {k: v for k, v in jwk.items() if v is not None})


@pytest.mark.parametrize("alg", ["RS256", "none", "HS256", ["ES256"], None])
def test_an_alg_other_than_es256_or_eddsa_is_refused(tmp_path: Path, alg: object) -> None:
    assert "alg must be one of" in refusal(tmp_path, ec_jwk(alg=alg))


def test_a_p256_point_off_the_curve_is_refused(tmp_path: Path) -> None:
    jwk = ec_jwk()
    y = base64.urlsafe_b64decode(jwk["y"] + "=")
    refusal(tmp_path, {**jwk, "y": b64(y[:31] + bytes([y[31] ^ 1]))})


def test_a_p256_coordinate_at_the_field_prime_is_refused(tmp_path: Path) -> None:
    jwk = {**ec_jwk(), "x": b64(P256_P.to_bytes(32, "big"))}
    assert "below the field prime" in refusal(tmp_path, jwk)


@pytest.mark.parametrize("length", [31, 33])
def test_a_p256_coordinate_of_another_length_is_refused(tmp_path: Path, length: int) -> None:
    jwk = ec_jwk()
    x = base64.urlsafe_b64decode(jwk["x"] + "=")
    short_or_long = x[1:] if length == 31 else b"\x00" + x
    assert "32 bytes" in refusal(tmp_path, {**jwk, "x": b64(short_or_long)})


@pytest.mark.parametrize("spoil", ["padded", "trailing bits", "standard alphabet"])
def test_a_coordinate_in_loose_base64url_is_refused(tmp_path: Path, spoil: str) -> None:
    """One key, one spelling: the JWK's thumbprint (its kid) is over this exact text."""
    raw = ed_raw(ed25519.Ed25519PrivateKey.generate().public_key())
    text = b64(raw)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spoilt = {
        "padded": text + "=",
        "trailing bits": text[:-1] + alphabet[alphabet.index(text[-1]) + 1],
        "standard alphabet": "+" + text[1:],
    }[spoil]
    assert "base64url" in refusal(tmp_path, {**ed_jwk(raw), "x": spoilt})


def test_a_trust_file_repeating_a_member_is_refused(tmp_path: Path) -> None:
    """Two `x` in one JWK: the operator reads one key, a last-wins parser loads another."""
    first, second = ed_jwk(), ed_jwk()
    text = json.dumps({"keys": [second]}).replace('"x":', f'"x": "{first["x"]}", "x":', 1)
    (tmp_path / "CNSS.jwks.json").write_text(text)
    with pytest.raises(TrustStoreError, match=r"CNSS\.jwks\.json.*'x' appears twice"):
        load_dir(tmp_path)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def followed(directory: Path, clock: Clock) -> TrustStore:
    (directory / "CNSS.jwks.json").write_text(json.dumps({"keys": [ec_jwk()]}))
    return load_dir(directory, clock=clock)


def test_a_newly_issued_institution_is_trusted_once_the_check_interval_has_passed(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = followed(tmp_path, clock)
    (tmp_path / "ANSS.jwks.json").write_text(json.dumps({"keys": [ec_jwk()]}))
    assert store.get("ANSS", "k-ec") is None  # checked at most once per interval
    clock.now += CHECK_EVERY_S
    assert store.get("ANSS", "k-ec") is not None
    assert store.institutions == {"CNSS", "ANSS"}


def test_a_key_revoked_in_the_directory_is_revoked_for_the_running_store(tmp_path: Path) -> None:
    clock = Clock()
    store = followed(tmp_path, clock)
    jwk = ec_jwk()
    (tmp_path / "CNSS.jwks.json").write_text(json.dumps({"keys": [jwk], "revoked": ["k-ec"]}))
    clock.now += CHECK_EVERY_S
    key = store.get("CNSS", "k-ec")
    assert key is not None
    assert key.revoked


def test_reload_reads_the_directory_at_once(tmp_path: Path) -> None:
    store = followed(tmp_path, Clock())
    (tmp_path / "MEN.jwks.json").write_text(json.dumps({"keys": [ed_jwk()]}))
    assert store.reload() == 2
    assert store.get("MEN", "k-ed") is not None


def test_a_directory_that_no_longer_loads_keeps_the_keys_loaded_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = followed(tmp_path, clock)
    (tmp_path / "ANSS.jwks.json").write_text("{not json")
    clock.now += CHECK_EVERY_S
    assert store.get("CNSS", "k-ec") is not None
    assert store.get("ANSS", "k-ec") is None
    assert "ANSS.jwks.json" in caplog.text


def test_a_key_not_known_yet_is_looked_for_again_without_waiting_the_full_interval(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = followed(tmp_path, clock)
    (tmp_path / "ANSS.jwks.json").write_text(json.dumps({"keys": [ec_jwk()]}))
    clock.now += MISS_RECHECK_S
    assert store.get("ANSS", "k-ec") is not None
