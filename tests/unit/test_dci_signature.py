"""The DCI envelope signature, exactly as docs/dci.md fixes it (pure, with a fixed clock)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.base.errors import Reason
from gateway.base.jws import PublicKey, TokenError
from gateway.dci import signature
from gateway.dci.signature import MAX_SIGNATURE_CHARS, Verified, digest, sign, verify, verify_with

NOW = 1_800_000_000
PLANTED = "PLANTED-7f3a9c-IDCS"

CNSS_ES = ec.generate_private_key(ec.SECP256R1())
CNSS_ED = ed25519.Ed25519PrivateKey.generate()
CNSS_OLD = ec.generate_private_key(ec.SECP256R1())
ANSS_ES = ec.generate_private_key(ec.SECP256R1())
GATEWAY = ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Key:
    alg: str
    key: PublicKey
    revoked: bool = False


class DictKeys:
    """The trust store's lookup, in memory: (institution, kid) -> key."""

    def __init__(self, keys: dict[tuple[str, str], Key]) -> None:
        self.keys = keys

    def get(self, institution: str, kid: str) -> Key | None:
        return self.keys.get((institution, kid))


KEYS = DictKeys(
    {
        ("CNSS", "cnss-es"): Key("ES256", CNSS_ES.public_key()),
        ("CNSS", "cnss-ed"): Key("EdDSA", CNSS_ED.public_key()),
        ("CNSS", "cnss-old"): Key("ES256", CNSS_OLD.public_key(), revoked=True),
        ("ANSS", "anss-es"): Key("ES256", ANSS_ES.public_key()),
    }
)


def header(sender_id: str = "CNSS") -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "message_id": "m-0001",
        "message_ts": "2027-01-15T10:00:00+01:00",
        "action": "search",
        "sender_id": sender_id,
        "total_count": 1,
    }


def message(value: Any = PLANTED) -> dict[str, Any]:
    return {
        "transaction_id": "t-0001",
        "search_request": [
            {
                "reference_id": "r-1",
                "timestamp": "2027-01-15T10:00:00+01:00",
                "search_criteria": {
                    "query_type": "idtype-value",
                    "query": {"type": "IDCS", "value": value},
                },
            }
        ],
    }


def signed(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = CNSS_ES,
    kid: str = "cnss-es",
    sender_id: str = "CNSS",
    created: int = NOW,
    lifetime: int = 300,
) -> str:
    return sign(
        header(sender_id),
        message(),
        sender_id=sender_id,
        kid=kid,
        key=key,
        created=created,
        lifetime=lifetime,
    )


def check(value: object, **overrides: Any) -> Verified:
    args: dict[str, Any] = {
        "header": header(),
        "message": message(),
        "institution": "CNSS",
        "keys": KEYS,
        "now": NOW,
    }
    args.update(overrides)
    return verify(value, args.pop("header"), args.pop("message"), **args)


def refused(value: object, **overrides: Any) -> TokenError:
    with pytest.raises(TokenError) as caught:
        check(value, **overrides)
    return caught.value


def by_hand(
    *,
    created: int,
    expires: int,
    key: ec.EllipticCurvePrivateKey = CNSS_ES,
    kid: str = "cnss-es",
) -> str:
    """A value built from docs/dci.md's rules alone, not by sign(): any `expires`."""
    canonical = json.dumps(
        {"header": header(), "message": message()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    dig = "SHA-256=" + base64.b64encode(hashlib.sha256(canonical).digest()).decode()
    text = f"(created): {created}\n(expires): {expires}\ndigest: {dig}".encode()
    r, s = decode_dss_signature(key.sign(text, ec.ECDSA(SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return (
        f'Signature: namespace="spdci", kidId="CNSS|{kid}|ecdsa-p256-sha256", '
        f'algorithm="ecdsa-p256-sha256", created="{created}", expires="{expires}", '
        f'headers="(created) (expires) digest", signature="{base64.b64encode(raw).decode()}"'
    )


# -- round trips and the format ------------------------------------------------------------


def test_es256_round_trip() -> None:
    assert check(signed()) == Verified("CNSS", "cnss-es", "ecdsa-p256-sha256", NOW, NOW + 300)


def test_ed25519_round_trip() -> None:
    value = signed(CNSS_ED, "cnss-ed")
    assert check(value) == Verified("CNSS", "cnss-ed", "ed25519", NOW, NOW + 300)


def test_sign_writes_the_documented_format() -> None:
    value = signed(CNSS_ED, "cnss-ed", lifetime=60)
    text = f"(created): {NOW}\n(expires): {NOW + 60}\ndigest: {digest(header(), message())}"
    raw = base64.b64encode(CNSS_ED.sign(text.encode())).decode()  # Ed25519 is deterministic
    assert value == (
        'Signature: namespace="spdci", kidId="CNSS|cnss-ed|ed25519", algorithm="ed25519", '
        f'created="{NOW}", expires="{NOW + 60}", headers="(created) (expires) digest", '
        f'signature="{raw}"'
    )


def test_a_value_built_from_the_documented_rules_verifies() -> None:
    assert check(by_hand(created=NOW, expires=NOW + 300)).kid == "cnss-es"


def test_digest_is_sha256_of_the_jcs_form() -> None:
    canonical = '{"header":{"a":"x","b":1},"message":[1,"é",null]}'.encode()
    expected = "SHA-256=" + base64.b64encode(hashlib.sha256(canonical).digest()).decode()
    assert digest({"b": 1, "a": "x"}, [1.0, "é", None]) == expected


def test_member_order_and_whitespace_do_not_matter() -> None:
    value = signed()
    reordered = json.loads(json.dumps(dict(reversed(list(message().items()))), indent=7))
    assert list(reordered) != list(message())
    assert check(value, message=reordered).kid == "cnss-es"


def test_spec_example_spacing_and_any_parameter_order_are_read() -> None:
    params = signed().removeprefix("Signature: ").split(", ")
    value = "Signature:  " + " ,\t".join(reversed(params))
    assert check(value).kid == "cnss-es"


def test_verify_with_checks_the_gateways_response_against_its_jwks() -> None:
    value = sign(
        header("JISR"), message(), sender_id="JISR", kid="gw-2027", key=GATEWAY, created=NOW
    )
    keys = {"gw-2026": ANSS_ES.public_key(), "gw-2027": GATEWAY.public_key()}
    verified = verify_with(value, header("JISR"), message(), sender_id="JISR", keys=keys, now=NOW)
    assert verified == Verified("JISR", "gw-2027", "ecdsa-p256-sha256", NOW, NOW + 300)


def test_verify_with_refuses_another_sender() -> None:
    value = signed()
    keys = {"cnss-es": CNSS_ES.public_key()}
    with pytest.raises(TokenError) as caught:
        verify_with(value, header(), message(), sender_id="JISR", keys=keys, now=NOW)
    assert caught.value.reason == Reason.ISSUER_MISMATCH


def test_verify_with_refuses_a_key_not_in_the_jwks() -> None:
    keys = {"gw-2026": GATEWAY.public_key()}
    with pytest.raises(TokenError) as caught:
        verify_with(signed(), header(), message(), sender_id="CNSS", keys=keys, now=NOW)
    assert caught.value.reason == Reason.UNKNOWN_KEY


# -- who signed ----------------------------------------------------------------------------


def test_changed_message_member_fails_bad_signature() -> None:
    assert refused(signed(), message=message("another value")).reason == Reason.BAD_SIGNATURE


def test_another_key_of_the_same_institution_fails_bad_signature() -> None:
    value = signed().replace("CNSS|cnss-es|", "CNSS|cnss-es2|")
    keys = DictKeys(KEYS.keys | {("CNSS", "cnss-es2"): Key("ES256", ANSS_ES.public_key())})
    assert refused(value, keys=keys).reason == Reason.BAD_SIGNATURE


def test_kid_id_sender_not_the_header_sender_is_issuer_mismatch() -> None:
    assert refused(signed(), header=header("ANSS")).reason == Reason.ISSUER_MISMATCH


def test_header_without_sender_is_issuer_mismatch() -> None:
    bare = {k: v for k, v in header().items() if k != "sender_id"}
    assert refused(signed(), header=bare).reason == Reason.ISSUER_MISMATCH


def test_authenticated_institution_not_the_sender_is_issuer_mismatch() -> None:
    value = signed(ANSS_ES, "anss-es", sender_id="ANSS")
    assert refused(value, header=header("ANSS")).reason == Reason.ISSUER_MISMATCH


def test_unknown_kid_is_unknown_key() -> None:
    assert refused(signed(kid="cnss-nope")).reason == Reason.UNKNOWN_KEY


def test_another_institutions_kid_is_unknown_key() -> None:
    assert refused(signed(ANSS_ES, "anss-es")).reason == Reason.UNKNOWN_KEY


def test_revoked_key_is_key_revoked() -> None:
    assert refused(signed(CNSS_OLD, "cnss-old")).reason == Reason.KEY_REVOKED


def test_algorithm_not_the_keys_pinned_one_is_not_allowed() -> None:
    # An ES256 signature naming the key pinned to EdDSA.
    error = refused(signed(CNSS_ES, "cnss-ed"))
    assert error.reason == Reason.ALGORITHM_NOT_ALLOWED
    assert "ed25519" in error.message


@pytest.mark.parametrize("name", ["es256", "ES256", "EdDSA", "hs2019", "rsa-sha256"])
def test_algorithm_outside_the_two_names_is_not_allowed(name: str) -> None:
    value = signed().replace("ecdsa-p256-sha256", name)
    assert refused(value).reason == Reason.ALGORITHM_NOT_ALLOWED


# -- when ----------------------------------------------------------------------------------


def test_expired_is_token_expired() -> None:
    assert refused(signed(created=NOW - 400)).reason == Reason.TOKEN_EXPIRED


def test_expires_skew_bound_is_exclusive() -> None:
    # expires = created + 300 = NOW - 29 is inside the skew; NOW - 30 is not.
    assert check(signed(created=NOW - 329)).expires == NOW - 29
    assert refused(signed(created=NOW - 330)).reason == Reason.TOKEN_EXPIRED


def test_created_ahead_is_token_not_yet_valid() -> None:
    assert refused(signed(created=NOW + 31)).reason == Reason.TOKEN_NOT_YET_VALID


def test_created_skew_bound_is_inclusive() -> None:
    assert check(signed(created=NOW + 30)).created == NOW + 30


def test_lifetime_over_300_is_token_lifetime() -> None:
    assert check(by_hand(created=NOW, expires=NOW + 300)).expires == NOW + 300
    assert refused(by_hand(created=NOW, expires=NOW + 301)).reason == Reason.TOKEN_LIFETIME


@pytest.mark.parametrize("expires", [NOW, NOW - 1])
def test_expires_not_after_created_is_token_lifetime(expires: int) -> None:
    assert refused(by_hand(created=NOW, expires=expires)).reason == Reason.TOKEN_LIFETIME


def test_times_are_judged_only_after_the_signature() -> None:
    value = signed(created=NOW - 10_000)
    assert refused(value, message=message("x")).reason == Reason.BAD_SIGNATURE


# -- form ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", 42, b"Signature: x"])
def test_absent_or_non_string_is_missing_signature(value: object) -> None:
    assert refused(value).reason == Reason.MISSING_SIGNATURE


@pytest.mark.parametrize("value", ["unsigned-stub", "unsigned", "invalid-signature"])
def test_compliance_suite_placeholders_are_malformed(value: str) -> None:
    assert refused(value).reason == Reason.MALFORMED_TOKEN


def _drop(name: str) -> Callable[[str], str]:
    def mutate(value: str) -> str:
        params = value.removeprefix("Signature: ").split(", ")
        return "Signature: " + ", ".join(p for p in params if not p.startswith(f"{name}="))

    return mutate


def _set(name: str, text: str) -> Callable[[str], str]:
    def mutate(value: str) -> str:
        params = value.removeprefix("Signature: ").split(", ")
        kept = [p if not p.startswith(f"{name}=") else f"{name}={text}" for p in params]
        return "Signature: " + ", ".join(kept)

    return mutate


def _signature_param(value: str) -> str:
    return value.rsplit('signature="', 1)[1].rstrip('"')


def _flip_last_base64_bit(value: str) -> str:
    # The last char before "==" carries 4 unused bits: a non-canonical spelling.
    b64 = _signature_param(value)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = alphabet[alphabet.index(b64[-3]) ^ 1]
    return value.replace(b64, b64[:-3] + odd + "==")


MALFORMED: dict[str, Callable[[str], str]] = {
    "missing_namespace": _drop("namespace"),
    "missing_kidId": _drop("kidId"),
    "missing_algorithm": _drop("algorithm"),
    "missing_created": _drop("created"),
    "missing_expires": _drop("expires"),
    "missing_headers": _drop("headers"),
    "missing_signature": _drop("signature"),
    "duplicate_created": lambda v: v + f', created="{NOW}"',
    "duplicate_signature": lambda v: v + f', signature="{_signature_param(v)}"',
    "unknown_parameter": lambda v: v + ', keyId="CNSS|cnss-es|ecdsa-p256-sha256"',
    "name_in_other_case": lambda v: v.replace("kidId=", "kidid="),
    "unquoted_value": _set("created", str(NOW)),
    "single_quoted_value": _set("created", f"'{NOW}'"),
    "escaped_quote_in_value": _set("headers", '"(created) \\"(expires)\\" digest"'),
    "backslash_in_value": _set("namespace", '"sp\\dci"'),
    "control_char_in_value": _set("namespace", '"sp\ndci"'),
    "non_ascii_in_value": _set("namespace", '"spdcï"'),
    "no_prefix": lambda v: v.removeprefix("Signature: "),
    "prefix_without_space": lambda v: v.replace("Signature: ", "Signature:"),
    "lowercase_prefix": lambda v: v.replace("Signature:", "signature:"),
    "leading_space": lambda v: " " + v,
    "trailing_space": lambda v: v + " ",
    "trailing_comma": lambda v: v + ",",
    "no_comma": lambda v: v.replace(", algorithm=", " algorithm="),
    "semicolon_separator": lambda v: v.replace(", algorithm=", "; algorithm="),
    "space_around_equals": lambda v: v.replace("algorithm=", "algorithm ="),
    "namespace_dci": _set("namespace", '"dci"'),
    "headers_reordered": _set("headers", '"(expires) (created) digest"'),
    "headers_without_digest": _set("headers", '"(created) (expires)"'),
    "created_not_decimal": _set("created", '"1.8e9"'),
    "created_signed": _set("created", f'"+{NOW}"'),
    "created_leading_zero": _set("created", f'"0{NOW}"'),
    "expires_empty": _set("expires", '""'),
    "kid_id_two_parts": lambda v: v.replace("CNSS|cnss-es|", "CNSS|"),
    "kid_id_four_parts": lambda v: v.replace("CNSS|cnss-es|", "CNSS|cnss-es|x|"),
    "kid_id_empty_kid": lambda v: v.replace("CNSS|cnss-es|", "CNSS||"),
    "kid_id_other_algorithm": lambda v: v.replace("|ecdsa-p256-sha256", "|ed25519"),
    "signature_not_base64": lambda v: v.replace(_signature_param(v), "not base64!"),
    "signature_urlsafe_base64": lambda v: v.replace(
        _signature_param(v), base64.urlsafe_b64encode(b"\xfb" * 64).decode()
    ),
    "signature_unpadded": lambda v: v.replace(_signature_param(v), _signature_param(v).rstrip("=")),
    "signature_non_canonical_base64": _flip_last_base64_bit,
    "signature_wrong_length": lambda v: v.replace(
        _signature_param(v), base64.b64encode(b"\x01" * 63).decode()
    ),
    "over_long": lambda v: v.replace('namespace="spdci"', f'namespace="{"s" * 2048}"'),
}


@pytest.mark.parametrize("mutate", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_value_is_malformed_token(mutate: Callable[[str], str]) -> None:
    assert refused(mutate(signed())).reason == Reason.MALFORMED_TOKEN


def test_longest_value_allowed_is_read() -> None:
    # Padded with spaces after the commas (allowed) up to exactly the limit.
    value = signed()
    padded = value.replace(", ", "," + " " * (MAX_SIGNATURE_CHARS - len(value) + 1), 1)
    assert len(padded) == MAX_SIGNATURE_CHARS
    assert check(padded).kid == "cnss-es"
    assert refused(padded.replace(",", ", ", 1)).reason == Reason.MALFORMED_TOKEN


def test_deeply_nested_message_is_malformed_not_an_exception() -> None:
    nested: Any = PLANTED
    for _ in range(100_000):
        nested = {"a": [nested]}
    assert refused(signed(), message=message(nested)).reason == Reason.MALFORMED_TOKEN


def test_nesting_up_to_the_limit_is_canonicalised() -> None:
    nested: Any = 1
    for _ in range(signature.MAX_JSON_DEPTH):
        nested = [nested]
    assert digest({}, nested).startswith("SHA-256=")
    with pytest.raises(TokenError) as caught:
        digest({}, [nested])
    assert caught.value.reason == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 2**53, "\ud800", {1: "x"}, {"x"}, b"bytes"],
    ids=["nan", "infinity", "beyond_2_53", "lone_surrogate", "int_key", "set", "bytes"],
)
def test_message_jcs_cannot_represent_is_malformed(value: Any) -> None:
    assert refused(signed(), message=message(value)).reason == Reason.MALFORMED_TOKEN


# -- what errors say -----------------------------------------------------------------------


def test_error_messages_never_echo_the_header_or_message() -> None:
    planted_header = header() | {"message_id": PLANTED, "meta": {"note": PLANTED}}
    errors = [
        refused(signed(), header=planted_header),  # BAD_SIGNATURE
        refused(signed(), message=message(PLANTED + "-changed")),
        refused(signed(), message=message([PLANTED, float("nan")])),
        refused(signed(), header=header(PLANTED)),  # ISSUER_MISMATCH
        refused(signed(sender_id=PLANTED), header=header(PLANTED), institution=PLANTED),
        refused(signed(kid="cnss-nope"), message=message(PLANTED)),
        refused(signed(created=NOW - 400), message=message()),
    ]
    nested: Any = PLANTED
    for _ in range(100):
        nested = [nested]
    errors.append(refused(signed(), message=message(nested)))
    assert {e.reason for e in errors} >= {
        Reason.BAD_SIGNATURE,
        Reason.MALFORMED_TOKEN,
        Reason.ISSUER_MISMATCH,
        Reason.UNKNOWN_KEY,
        Reason.TOKEN_EXPIRED,
    }
    for error in errors:
        assert PLANTED not in error.message
        assert PLANTED not in str(error)
        assert error.__cause__ is None


# -- what sign() refuses -------------------------------------------------------------------


@pytest.mark.parametrize("lifetime", [0, -1, 301])
def test_sign_refuses_a_lifetime_verify_would(lifetime: int) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        signed(lifetime=lifetime)


@pytest.mark.parametrize("kid", ["a|b", 'a"b', "a\\b", "a b", "", "clé"])
def test_sign_refuses_a_kid_that_cannot_be_written(kid: str) -> None:
    with pytest.raises(ValueError, match="kid"):
        signed(kid=kid)


def test_sign_refuses_a_key_of_another_curve() -> None:
    with pytest.raises(ValueError, match="P-256"):
        signed(ec.generate_private_key(ec.SECP384R1()))


def test_sign_refuses_negative_created() -> None:
    with pytest.raises(ValueError, match="created"):
        signed(created=-1)


def test_verify_with_reads_an_ed25519_key() -> None:
    value = signed(CNSS_ED, "cnss-ed")
    keys = {"cnss-ed": CNSS_ED.public_key()}
    verified = verify_with(value, header(), message(), sender_id="CNSS", keys=keys, now=NOW)
    assert verified.algorithm == "ed25519"


def test_verify_with_refuses_a_public_key_of_another_curve() -> None:
    keys = {"k": ec.generate_private_key(ec.SECP384R1()).public_key()}
    with pytest.raises(ValueError, match="P-256"):
        verify_with(signed(), header(), message(), sender_id="CNSS", keys=keys, now=NOW)


def test_a_key_whose_type_is_not_its_pinned_algorithm_never_verifies() -> None:
    keys = DictKeys({("CNSS", "odd"): Key("EdDSA", CNSS_ES.public_key())})
    assert refused(signed(CNSS_ED, "odd"), keys=keys).reason == Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "message",
    [
        {"b": 1, "a": [True, None, "é\u2028\x7f", {"z": '\n\t\x01"\\'}], "n": -(2**53) + 1},
        {"emoji": "\U0001f600 ومرحبا", "nested": [[[]], {}], "zero": 0},
        {"keys": {"\u00e9": 1, "e": 2}},  # a non-ASCII key: rfc8785's own path
        {"float": 1.5, "small": -3},  # a float: not plain, rfc8785 formats it
    ],
)
def test_the_fast_canonical_form_is_the_rfc8785_form(message: dict[str, Any]) -> None:
    header: dict[str, Any] = {"message_id": "m", "total_count": 1}
    expected = rfc8785.dumps({"header": header, "message": message})
    digest = signature.digest(header, message)
    assert digest == "SHA-256=" + base64.b64encode(hashlib.sha256(expected).digest()).decode()
