"""Request tokens checked exactly as the wire contract says (pure, with a fixed clock)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.base.errors import Reason
from gateway.base.jws import MAX_TOKEN_BYTES, TokenError, body_hash
from gateway.sdk.signing import Signer
from gateway.security.tokens import (
    BATCH_TYP,
    REQUEST_TYP,
    ReplayGuard,
    unverified_issuer,
    verify_batch,
    verify_request,
)
from gateway.security.trust import TrustedKey, TrustStore

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
        "jti": "a1b2c3d4e5f6g7h8",
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


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def text(obj: object) -> str:
    """JSON as a signer's library writes it (ASCII, escapes for everything else)."""
    return json.dumps(obj, separators=(",", ":"))


HEADER = text({"alg": "ES256", "typ": REQUEST_TYP, "kid": "cnss-1"})


def raw_signature(key: Any, data: bytes) -> bytes:
    """A JWS signature: Ed25519's own, or ES256's raw r||s."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_text(header: str | bytes, payload: str | bytes, key: Any = CNSS_KEY) -> str:
    """A validly signed token over exactly these bytes, which no JWT library would write."""
    parts = [part.encode() if isinstance(part, str) else part for part in (header, payload)]
    signing_input = f"{b64(parts[0])}.{b64(parts[1])}"
    return f"{signing_input}.{b64(raw_signature(key, signing_input.encode()))}"


def repeated(obj: dict[str, Any], name: str, first: Any) -> str:
    """`obj` as JSON with `name` given twice: `first`, then obj's own (a last-wins parser's)."""
    return "{" + text(name) + ":" + text(first) + "," + text(obj)[1:]


def nested(levels: int) -> Any:
    """A JSON value `levels` deep, objects and arrays in turn."""
    value: Any = {}
    for level in range(levels - 1):
        value = [value] if level % 2 == 0 else {"n": value}
    return value


def signed_token_of(length: int) -> str:
    """A well-formed token, validly signed, exactly `length` characters long."""
    shortest = len(sign(claims()))
    for header_pad in range(4):
        for pad in range(max(0, (length - shortest) * 3 // 4 - 30), length):
            headers = {"x": "h" * header_pad} if header_pad else {}
            token = sign(claims(pad="p" * pad), **headers)
            if len(token) >= length:
                break
        if len(token) == length:
            return token
    raise AssertionError(f"no token of {length} characters")


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


# -- Size: one limit, checked before anything else is read --------------------------------


def test_a_token_of_2048_bytes_is_read() -> None:
    token = signed_token_of(2048)
    assert check(token)


def test_a_token_of_2049_bytes_is_too_large() -> None:
    assert refused(lambda: check(signed_token_of(2049))) == Reason.TOKEN_TOO_LARGE


@pytest.mark.parametrize("length", [4 * 1024, 9 * 1024])
def test_validly_signed_tokens_of_4_to_9_kib_are_too_large(length: int) -> None:
    assert refused(lambda: check(signed_token_of(length))) == Reason.TOKEN_TOO_LARGE


@pytest.mark.parametrize(
    "token",
    ["A" * 2049, "é" * 2049, "[" * 2049, "A." * 1025, sign(claims(jti="j" * 2048))],
    ids=["one part", "not ascii", "brackets", "many parts", "oversized claim"],
)
def test_size_is_checked_before_anything_else(token: str) -> None:
    assert refused(lambda: check(token)) == Reason.TOKEN_TOO_LARGE


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_the_largest_token_the_contract_allows_fits_with_room_to_spare(alg: str) -> None:
    """Every claim as long as its rule allows, and a 43-character kid (a JWK thumbprint)."""
    key: Any = CNSS_KEY if alg == "ES256" else CNSS_ED
    iss, kid, method = "I" * 32, "k" * 43, "/" + "p" * 128 + "/" + "M" * 64
    trust = TrustStore({(iss, kid): TrustedKey(iss, kid, alg, key.public_key(), False)})
    longest = claims(iss=iss, sub="s" * 64, jti="j" * 128, purpose="P" * 64, method=method, nbf=NOW)
    token = jwt.encode(longest, key, algorithm=alg, headers={"typ": REQUEST_TYP, "kid": kid})
    assert len(token) <= MAX_TOKEN_BYTES * 6 // 10  # room for a long gateway id, extensions
    verify_request(
        token, institution=iss, method=method, body=BODY, audience=AUD, now=NOW, trust=trust
    )


def test_an_sdk_token_is_under_a_third_of_the_limit() -> None:
    signer = Signer("CNSS", "k" * 43, "ES256", CNSS_KEY, AUD, sub="cnss-counter-017")
    assert len(signer.request_token(METHOD, "AMO_ENROLMENT", BODY)) <= MAX_TOKEN_BYTES // 3


# -- Depth: bounded before decoding, never a RecursionError --------------------------------


def test_a_header_nested_1000_deep_is_malformed_not_a_crash() -> None:
    token = sign_text("[" * 1000, text(claims()))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_claims_nested_1000_deep_are_malformed_not_a_crash() -> None:
    token = sign_text(HEADER, "[" * 1000)
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_claims_nested_4_deep_are_accepted() -> None:
    assert check(sign(claims(ext=nested(3))))


def test_claims_nested_5_deep_are_malformed() -> None:
    assert refused(lambda: check(sign(claims(ext=nested(4))))) == Reason.MALFORMED_TOKEN


def test_a_header_nested_4_deep_is_accepted() -> None:
    assert check(sign(claims(), ext=nested(3)))


def test_a_header_nested_5_deep_is_malformed() -> None:
    assert refused(lambda: check(sign(claims(), ext=nested(4)))) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("note", ["[[[[[{{{{{", 'a"[[[[[[', "\\\\[[[[[[", "]]]]]]}}}}}"])
def test_brackets_inside_strings_are_not_nesting(note: str) -> None:
    assert check(sign(claims(note=note)))


# -- Member names: each once, at any level ------------------------------------------------


@pytest.mark.parametrize(("name", "first"), [("alg", "none"), ("typ", "JWT"), ("kid", "anss-1")])
def test_a_repeated_header_member_is_malformed(name: str, first: str) -> None:
    header = repeated({"alg": "ES256", "typ": REQUEST_TYP, "kid": "cnss-1"}, name, first)
    token = sign_text(header, text(claims()))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("iss", "ANSS"),
        ("sub", "someone-else"),
        ("aud", "other-gateway"),
        ("iat", NOW - 10),
        ("exp", NOW + 10),
        ("jti", "another-jti-0001"),
        ("purpose", "OTHER_PURPOSE"),
        ("method", "/jisr.v1.RegistryExchange/GetHouseholdStatus"),
        ("rh", body_hash(b"other bytes")),
    ],
)
def test_a_repeated_claim_is_malformed(name: str, first: object) -> None:
    token = sign_text(HEADER, repeated(claims(), name, first))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_a_claim_repeated_with_the_same_value_is_malformed() -> None:
    token = sign_text(HEADER, repeated(claims(), "iss", "CNSS"))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_a_repeated_member_inside_an_extension_claim_is_malformed() -> None:
    payload = text(claims(ext={"a": 2})).replace('{"a":2}', '{"a":1,"a":2}')
    assert refused(lambda: check(sign_text(HEADER, payload))) == Reason.MALFORMED_TOKEN


def _batch(payload: str) -> str:
    return sign_text(text({"alg": "ES256", "typ": BATCH_TYP, "kid": "cnss-1"}), payload)


def _verify_batch(token: str, seq: int = 3, data: bytes = b"\x0a\x02AB") -> str:
    return verify_batch(token, institution="CNSS", jti="call-1", seq=seq, batch=data, trust=TRUST)


@pytest.mark.parametrize(("name", "first"), [("jti", "call-2"), ("seq", 4), ("rh", "x")])
def test_a_repeated_batch_claim_is_malformed(name: str, first: object) -> None:
    token = _batch(
        repeated({"jti": "call-1", "seq": 3, "rh": body_hash(b"\x0a\x02AB")}, name, first)
    )
    assert refused(lambda: _verify_batch(token)) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("seq", [True, 1.0, "1"])
def test_a_batch_seq_that_is_not_a_whole_number_is_malformed(seq: object) -> None:
    token = _batch(text({"jti": "call-1", "seq": seq, "rh": body_hash(b"\x0a\x02AB")}))
    assert refused(lambda: _verify_batch(token, seq=1)) == Reason.MALFORMED_TOKEN


# -- Strict JSON: UTF-8 only, no lone surrogate, no NaN -------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_claims_in_another_encoding_than_utf8_are_malformed(encoding: str) -> None:
    token = sign_text(HEADER, text(claims()).encode(encoding))
    assert refused(lambda: check(token)) == Reason.MALFORMED_TOKEN


def test_a_surrogate_encoded_in_the_bytes_is_malformed() -> None:
    payload = text(claims(note="X")).encode().replace(b'"X"', b'"\xed\xa0\x80"')
    assert refused(lambda: check(sign_text(HEADER, payload))) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    "where",
    [
        {"note": "\ud800"},
        {"note": ["ok", {"deeper": "a\udfffb"}]},
        {"\udc80": 1},
    ],
    ids=["claim value", "nested value", "member name"],
)
def test_a_lone_surrogate_anywhere_in_the_claims_is_malformed(where: dict[str, Any]) -> None:
    assert refused(lambda: check(sign({**claims(), **where}))) == Reason.MALFORMED_TOKEN


def test_a_lone_surrogate_in_the_header_is_malformed() -> None:
    assert refused(lambda: check(sign(claims(), x="\ud800"))) == Reason.MALFORMED_TOKEN


def test_a_surrogate_pair_escape_is_one_character_and_accepted() -> None:
    assert check(sign(claims(note="\U0001f600")))  # written "\ud83d\ude00"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    payload = text(claims())[:-1] + f',"x":{constant}}}'
    assert refused(lambda: check(sign_text(HEADER, payload))) == Reason.MALFORMED_TOKEN


# -- aud: the gateway id, one string --------------------------------------------------------


@pytest.mark.parametrize("aud", [[AUD], [AUD, "other-gateway"], ["other-gateway"], []])
def test_aud_as_a_list_is_malformed_even_if_it_names_this_gateway(aud: list[str]) -> None:
    assert refused(lambda: check(sign(claims(aud=aud)))) == Reason.MALFORMED_TOKEN


# -- String claims: each its own characters and length -------------------------------------

JTI = "a1b2c3d4e5f6g7h8"
FORBIDDEN = ["\x00", "\r", "\n", "\t", "\x1b", "\x7f", " ", "\ufffd", "é", "\ud800", "\udfff"]


@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
@pytest.mark.parametrize(("name", "value"), [("jti", JTI), ("sub", "counter-17")])
def test_a_jti_or_sub_with_a_character_outside_its_set_is_malformed_and_named(
    name: str, value: str, char: str
) -> None:
    for spoilt in (value + char, char + value, value[:4] + char + value[4:]):
        with pytest.raises(TokenError) as err:
            check(sign(claims(**{name: spoilt})))
        assert err.value.reason == Reason.MALFORMED_TOKEN
        assert f" {name} " in err.value.message


def _noncanonical(rh: str) -> str:
    """The same 32 bytes with the unused low bits of the last character set."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    return rh[:-1] + alphabet[alphabet.index(rh[-1]) + 1]


RH = body_hash(BODY)
ACCEPTED_SHAPES = [
    ("jti", "j" * 16),
    ("jti", "j" * 128),
    ("jti", "AZaz09-_AZaz09-_"),
    ("sub", "s"),
    ("sub", "s" * 64),
    ("sub", "Officer.7_a:b@c-d"),
    ("purpose", "AB"),
    ("purpose", "A" + "B" * 63),
    ("purpose", "DATA_PROTECTION_AUDIT"),
    ("method", "/a/M"),
    ("method", "/" + "p" * 128 + "/" + "M" * 64),
    ("method", "/jisr.v1.ConsentRegistry/GrantConsent"),
]
REFUSED_SHAPES = [
    ("jti", "j" * 15),
    ("jti", "j" * 129),
    ("jti", "j" * 15 + "."),
    ("jti", "j" * 16 + "="),
    ("jti", 1234567890123456),
    ("sub", ""),
    ("sub", "s" * 65),
    ("sub", "officer/7"),
    ("sub", ["counter-17"]),
    ("iss", "cnss"),
    ("iss", "C"),
    ("iss", "C" * 33),
    ("iss", "1CNSS"),
    ("iss", "CNSS\x00"),
    ("iss", 7),
    ("purpose", "A"),
    ("purpose", "A" + "B" * 64),
    ("purpose", "amo_enrolment"),
    ("purpose", "_AMO"),
    ("purpose", "AMO ENROLMENT"),
    ("method", "GetPersonStatus"),
    ("method", METHOD + "\n"),
    ("method", "/" + "p" * 129 + "/M"),
    ("method", "/a/" + "M" * 65),
    ("method", "/jisr.v1.RegistryExchange/Get/PersonStatus"),
    ("method", "//GetPersonStatus"),
    ("rh", RH + "="),
    ("rh", RH[:-1]),
    ("rh", RH + "A"),
    ("rh", _noncanonical(RH)),
    ("rh", "+" + RH[1:]),
]


@pytest.mark.parametrize(("name", "value"), ACCEPTED_SHAPES)
def test_a_string_claim_within_its_rule_is_accepted(name: str, value: str) -> None:
    accepted = check(sign(claims(**{name: value})), method=value if name == "method" else METHOD)
    assert getattr(accepted, name) == value


@pytest.mark.parametrize("iss", ["CN", "C" + "N" * 31, "CNSS_2"])
def test_an_institution_id_within_its_rule_is_an_issuer(iss: str) -> None:
    assert unverified_issuer(sign(claims(iss=iss))) == iss


@pytest.mark.parametrize(("name", "value"), REFUSED_SHAPES)
def test_a_string_claim_outside_its_rule_is_malformed_and_named(name: str, value: object) -> None:
    with pytest.raises(TokenError) as err:
        check(sign_text(HEADER, text(claims(**{name: value}))))
    assert err.value.reason == Reason.MALFORMED_TOKEN
    assert f"claim {name} must be" in err.value.message


# -- Time: the exact boundaries of the 30 s skew and the 300 s lifetime ---------------------


def test_iat_30_seconds_ahead_is_accepted() -> None:
    assert check(sign(claims(iat=NOW + 30, exp=NOW + 90)))


def test_iat_31_seconds_ahead_is_not_yet_valid() -> None:
    token = sign(claims(iat=NOW + 31, exp=NOW + 91))
    assert refused(lambda: check(token)) == Reason.TOKEN_NOT_YET_VALID


def test_nbf_30_seconds_ahead_is_accepted() -> None:
    assert check(sign(claims(nbf=NOW + 30)))


def test_nbf_31_seconds_ahead_is_not_yet_valid() -> None:
    assert refused(lambda: check(sign(claims(nbf=NOW + 31)))) == Reason.TOKEN_NOT_YET_VALID


def test_nbf_in_the_past_is_accepted() -> None:
    assert check(sign(claims(nbf=NOW - 3600)))


@pytest.mark.parametrize("nbf", [str(NOW), float(NOW), True, [NOW]])
def test_nbf_that_is_not_a_whole_number_is_malformed(nbf: object) -> None:
    with pytest.raises(TokenError) as err:
        check(sign(claims(nbf=nbf)))
    assert (err.value.reason, "claim nbf" in err.value.message) == (Reason.MALFORMED_TOKEN, True)


def test_a_lifetime_of_300_seconds_is_accepted() -> None:
    assert check(sign(claims(iat=NOW, exp=NOW + 300)))


def test_a_lifetime_of_301_seconds_is_refused() -> None:
    assert refused(lambda: check(sign(claims(iat=NOW, exp=NOW + 301)))) == Reason.TOKEN_LIFETIME


def test_a_lifetime_of_1_second_is_accepted() -> None:
    assert check(sign(claims(iat=NOW, exp=NOW + 1)))


def test_exp_equal_to_iat_is_refused() -> None:
    assert refused(lambda: check(sign(claims(iat=NOW, exp=NOW)))) == Reason.TOKEN_LIFETIME


def test_exp_30_seconds_ago_is_accepted() -> None:
    assert check(sign(claims(iat=NOW - 90, exp=NOW - 30)))


def test_exp_31_seconds_ago_is_expired() -> None:
    assert refused(lambda: check(sign(claims(iat=NOW - 91, exp=NOW - 31)))) == Reason.TOKEN_EXPIRED


# -- Plaintext development mode: the issuer is read by the same strict parser --------------


def test_unverified_issuer_reads_iss() -> None:
    assert unverified_issuer(sign(claims())) == "CNSS"


def test_unverified_issuer_refuses_an_oversized_token() -> None:
    token = signed_token_of(2049)
    assert refused(lambda: unverified_issuer(token)) == Reason.TOKEN_TOO_LARGE


def test_unverified_issuer_refuses_deep_nesting_without_crashing() -> None:
    token = sign_text("[" * 1000, text(claims()))
    assert refused(lambda: unverified_issuer(token)) == Reason.MALFORMED_TOKEN


def test_unverified_issuer_refuses_claims_nested_5_deep() -> None:
    token = sign(claims(ext=nested(4)))
    assert refused(lambda: unverified_issuer(token)) == Reason.MALFORMED_TOKEN


def test_unverified_issuer_refuses_a_repeated_iss() -> None:
    token = sign_text(HEADER, repeated(claims(), "iss", "ANSS"))
    assert refused(lambda: unverified_issuer(token)) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("iss", ["CNSS\n", "cnss", ["CNSS"]])
def test_unverified_issuer_refuses_an_iss_outside_its_rule(iss: object) -> None:
    token = sign_text(HEADER, text(claims(iss=iss)))
    assert refused(lambda: unverified_issuer(token)) == Reason.MALFORMED_TOKEN
