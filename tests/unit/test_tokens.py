"""Request tokens checked exactly as the wire contract says (pure, with a fixed clock)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.errors import Reason
from gateway.tokens import (
    REQUEST_TYP,
    ReplayGuard,
    TokenError,
    body_hash,
    verify_batch,
    verify_request,
)
from gateway.trust import TrustedKey, TrustStore

NOW = 1_800_000_000
BODY = b"\x0a\x04TEST\x12\x0a1234567897"
METHOD = "/jisr.v1.RegistryExchange/GetPersonStatus"
AUD = "jisr-gateway"

CNSS_KEY = ec.generate_private_key(ec.SECP256R1())
CNSS_ED = ed25519.Ed25519PrivateKey.generate()
ANSS_KEY = ec.generate_private_key(ec.SECP256R1())
REVOKED_KEY = ec.generate_private_key(ec.SECP256R1())

TRUST = TrustStore(
    {
        ("CNSS", "cnss-1"): TrustedKey("CNSS", "cnss-1", "ES256", CNSS_KEY.public_key(), False),
        ("CNSS", "cnss-ed"): TrustedKey("CNSS", "cnss-ed", "EdDSA", CNSS_ED.public_key(), False),
        ("CNSS", "cnss-0"): TrustedKey("CNSS", "cnss-0", "ES256", REVOKED_KEY.public_key(), True),
        ("ANSS", "anss-1"): TrustedKey("ANSS", "anss-1", "ES256", ANSS_KEY.public_key(), False),
    }
)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "CNSS",
        "sub": "counter-17",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "a1b2c3",
        "purpose": "AMO_ENROLMENT",
        "method": METHOD,
        "rh": body_hash(BODY),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = CNSS_KEY, **headers: Any) -> str:
    header = {"typ": REQUEST_TYP, "kid": "cnss-1", **headers}
    alg = header.pop("alg", "ES256")
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def check(token: str, body: bytes = BODY, now: float = NOW, method: str = METHOD) -> object:
    return verify_request(
        token, institution="CNSS", method=method, body=body, audience=AUD, now=now, trust=TRUST
    )


def refused(call: Callable[[], object]) -> Reason:
    with pytest.raises(TokenError) as err:
        call()
    return err.value.reason


def _segments(header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return part(header) + "." + part(claims())


def _unsigned_token(header: dict[str, Any], signature: bytes) -> str:
    """A token built by hand, as an attacker would, with any header and signature."""
    tail = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return _segments(header) + "." + tail


def test_a_well_formed_token_is_accepted() -> None:
    accepted = check(sign(claims()))
    assert accepted.iss == "CNSS"  # type: ignore[attr-defined]
    assert accepted.purpose == "AMO_ENROLMENT"  # type: ignore[attr-defined]


def test_an_eddsa_key_signs_with_eddsa() -> None:
    token = jwt.encode(
        claims(), CNSS_ED, algorithm="EdDSA", headers={"typ": REQUEST_TYP, "kid": "cnss-ed"}
    )
    assert check(token).kid == "cnss-ed"  # type: ignore[attr-defined]


def test_alg_none_is_refused() -> None:
    token = _unsigned_token({"alg": "none", "typ": REQUEST_TYP, "kid": "cnss-1"}, b"")
    assert refused(lambda: check(token)) == Reason.ALGORITHM_NOT_ALLOWED


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    public_pem = CNSS_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": REQUEST_TYP, "kid": "cnss-1"}
    signing_input = _segments(header)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = _unsigned_token(header, mac)
    assert refused(lambda: check(token)) == Reason.ALGORITHM_NOT_ALLOWED


def test_another_institutions_key_is_unknown_to_the_caller() -> None:
    token = sign(claims(), ANSS_KEY, kid="anss-1")
    assert refused(lambda: check(token)) == Reason.UNKNOWN_KEY


def test_a_forged_signature_is_refused() -> None:
    token = sign(claims(), ANSS_KEY)  # names CNSS's kid, signed by another key
    assert refused(lambda: check(token)) == Reason.BAD_SIGNATURE


def test_a_revoked_key_is_refused() -> None:
    token = sign(claims(), REVOKED_KEY, kid="cnss-0")
    assert refused(lambda: check(token)) == Reason.KEY_REVOKED


def test_iss_other_than_the_certificate_is_refused() -> None:
    assert refused(lambda: check(sign(claims(iss="ANSS")))) == Reason.ISSUER_MISMATCH


def test_wrong_audience_is_refused() -> None:
    assert refused(lambda: check(sign(claims(aud="other-gateway")))) == Reason.WRONG_AUDIENCE


def test_expired_token_is_refused_after_the_skew() -> None:
    token = sign(claims(iat=NOW - 200, exp=NOW - 31))
    assert refused(lambda: check(token)) == Reason.TOKEN_EXPIRED
    assert check(sign(claims(iat=NOW - 200, exp=NOW - 29)))


def test_iat_in_the_future_beyond_skew_is_refused() -> None:
    token = sign(claims(iat=NOW + 31, exp=NOW + 90))
    assert refused(lambda: check(token)) == Reason.TOKEN_NOT_YET_VALID
    assert check(sign(claims(iat=NOW + 29, exp=NOW + 90)))


def test_a_lifetime_over_300_seconds_is_refused() -> None:
    assert refused(lambda: check(sign(claims(exp=NOW + 301)))) == Reason.TOKEN_LIFETIME


def test_token_for_another_method_is_refused() -> None:
    token = sign(claims(method="/jisr.v1.RegistryExchange/GetHouseholdStatus"))
    assert refused(lambda: check(token)) == Reason.METHOD_MISMATCH


def test_token_for_other_request_bytes_is_refused() -> None:
    assert refused(lambda: check(sign(claims()), body=BODY + b"\x00")) == Reason.BODY_MISMATCH


@pytest.mark.parametrize("missing", ["sub", "jti", "purpose", "rh", "exp"])
def test_a_missing_claim_is_refused(missing: str) -> None:
    token = sign(claims(**{missing: None}))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_wrong_typ_is_refused() -> None:
    token = sign(claims(), typ="JWT")
    assert refused(lambda: check(token)) == Reason.WRONG_TOKEN_TYPE


def test_a_key_in_the_header_is_refused() -> None:
    token = sign(claims(), jwk={"kty": "EC"})
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_garbage_is_malformed() -> None:
    assert refused(lambda: check("not.a.token")) == Reason.MALFORMED_TOKEN


def test_a_batch_signature_binds_call_position_and_bytes() -> None:
    batch = b"\x0a\x02AB"
    token = jwt.encode(
        {"jti": "call-1", "seq": 3, "rh": body_hash(batch)},
        CNSS_KEY,
        algorithm="ES256",
        headers={"typ": "jisr-batch+jwt", "kid": "cnss-1"},
    )

    def verify(jti: str = "call-1", seq: int = 3, data: bytes = batch) -> str:
        return verify_batch(token, institution="CNSS", jti=jti, seq=seq, batch=data, trust=TRUST)

    assert verify() == body_hash(batch)
    assert refused(lambda: verify(seq=4)) == Reason.BATCH_MISMATCH
    assert refused(lambda: verify(jti="call-2")) == Reason.BATCH_MISMATCH
    assert refused(lambda: verify(data=b"\x0a\x02AC")) == Reason.BODY_MISMATCH


def test_a_jti_is_accepted_once_per_institution() -> None:
    guard = ReplayGuard(clock=lambda: NOW)
    assert guard.first_use("CNSS", "j1", NOW + 60)
    assert not guard.first_use("CNSS", "j1", NOW + 60)
    assert guard.first_use("ANSS", "j1", NOW + 60)


def test_replay_memory_outlives_the_token() -> None:
    clock = [float(NOW)]
    guard = ReplayGuard(clock=lambda: clock[0])
    guard.first_use("CNSS", "j1", NOW + 60)
    clock[0] = NOW + 60 + 30  # expired but still within skew: must still be remembered
    assert not guard.first_use("CNSS", "j1", NOW + 60)


def test_body_hash_is_unpadded_base64url_sha256() -> None:
    assert body_hash(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


@pytest.mark.parametrize("token", ["A.B.C", "a.b", "é.b.c", "eyJ.eyJ.", "...."])
def test_any_malformed_compact_form_is_malformed_not_a_crash(token: str) -> None:
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN
