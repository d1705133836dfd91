"""Attacks on a real gateway over real mTLS: each is refused with the right status and
stable reason, discloses nothing, and the legitimate call beside it still succeeds."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.base.jws import body_hash
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1.records_pb2 import VitalStatus
from gateway.sdk.client import Credentials, JisrClient, JisrError, error_from
from gateway.sdk.signing import Signer
from gateway.security import pki
from gateway.security.tokens import REQUEST_TYP
from gateway.services.registry_exchange import SERVICE
from tests.support import identities, processes, registry_rows

PURPOSE = "AMO_ENROLMENT"
METHOD = "GetPersonStatus"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


@pytest.fixture(scope="module")
def subject(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT idcs FROM membership ORDER BY idcs LIMIT 1")


def _body(idcs: str, purpose: str = PURPOSE) -> bytes:
    return pb.GetPersonStatusRequest(purpose=purpose, idcs=idcs).SerializeToString()


def _claims(signer: Signer, body: bytes, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": signer.institution,
        "sub": "officer-7",
        "aud": signer.audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(12),
        "purpose": PURPOSE,
        "method": FULL_METHOD,
        "rh": body_hash(body),
    }
    claims.update(overrides)
    return claims


def _forge(signer: Signer, body: bytes, *, key: Any = None, kid: str = "", **claims: Any) -> str:
    return jwt.encode(
        _claims(signer, body, **claims),
        key if key is not None else signer.key,
        algorithm="ES256",
        headers={"typ": REQUEST_TYP, "kid": kid or signer.kid},
    )


def _refusal(
    target: str, creds: Credentials, body: bytes, tokens: list[str]
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as err:
        identities.raw_call(target, creds, METHOD, body, tokens)
    error = error_from(err.value)
    return error.code, error.reason, error.message


def _legitimate_call_succeeds(target: str, creds: Credentials, idcs: str) -> None:
    with JisrClient(target, creds, timeout=30) as client:
        person = client.person_status(PURPOSE, idcs).message.person
        assert person.vital_status != VitalStatus.VITAL_STATUS_UNSPECIFIED


UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def _cases(demo: Credentials, anss: Credentials, idcs: str) -> dict[str, tuple[Any, ...]]:
    """name -> (body, tokens, expected code, expected reason)."""
    signer = demo.signer
    body = _body(idcs)
    public_pem = _public_pem(signer)
    now = int(time.time())
    return {
        "token signed by another institution's key": (
            body,
            [_forge(signer, body, key=anss.signer.key, kid=anss.signer.kid)],
            UNAUTH,
            "UNKNOWN_KEY",
        ),
        "iss other than the certificate's institution": (
            body,
            [_forge(signer, body, iss="ANSS")],
            UNAUTH,
            "ISSUER_MISMATCH",
        ),
        "alg none": (body, [_none_token(signer, body)], UNAUTH, "ALGORITHM_NOT_ALLOWED"),
        "HS256 signed with the public key": (
            body,
            [_hs256_token(signer, body, public_pem)],
            UNAUTH,
            "ALGORITHM_NOT_ALLOWED",
        ),
        "expired token": (
            body,
            [_forge(signer, body, iat=now - 200, exp=now - 100)],
            UNAUTH,
            "TOKEN_EXPIRED",
        ),
        "iat in the future beyond skew": (
            body,
            [_forge(signer, body, iat=now + 120, exp=now + 180)],
            UNAUTH,
            "TOKEN_NOT_YET_VALID",
        ),
        "wrong aud": (body, [_forge(signer, body, aud="other-gateway")], UNAUTH, "WRONG_AUDIENCE"),
        "token for another body": (
            _body(idcs[:-1] + str((int(idcs[-1]) + 1) % 10)),
            [_forge(signer, body)],
            UNAUTH,
            "BODY_MISMATCH",
        ),
        "token for another method": (
            body,
            [_forge(signer, body, method=f"/{SERVICE}/GetHouseholdStatus")],
            UNAUTH,
            "METHOD_MISMATCH",
        ),
        "no signature": (body, [], UNAUTH, "MISSING_SIGNATURE"),
        "two signatures": (
            body,
            [_forge(signer, body), _forge(signer, body)],
            UNAUTH,
            "MISSING_SIGNATURE",
        ),
        "purpose not permitted": (
            _body(idcs, "SCHOOL_SUPPORT"),
            [_forge(signer, _body(idcs, "SCHOOL_SUPPORT"), purpose="SCHOOL_SUPPORT")],
            grpc.StatusCode.PERMISSION_DENIED,
            "PURPOSE_NOT_ALLOWED",
        ),
    }


def _public_pem(signer: Signer) -> bytes:
    return signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return jwt.utils.base64url_encode(data).decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _none_token(signer: Signer, body: bytes) -> str:
    return (
        _segments({"alg": "none", "typ": REQUEST_TYP, "kid": signer.kid}, _claims(signer, body))
        + "."
    )


def _hs256_token(signer: Signer, body: bytes, secret: bytes) -> str:
    head = _segments({"alg": "HS256", "typ": REQUEST_TYP, "kid": signer.kid}, _claims(signer, body))
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


CASE_NAMES = [
    "token signed by another institution's key",
    "iss other than the certificate's institution",
    "alg none",
    "HS256 signed with the public key",
    "expired token",
    "iat in the future beyond skew",
    "wrong aud",
    "token for another body",
    "token for another method",
    "no signature",
    "two signatures",
    "purpose not permitted",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_forged_request_is_refused_and_the_legitimate_one_beside_it_succeeds(
    gateway: processes.Proc, demo: Credentials, pki_dir: Path, subject: str, case: str
) -> None:
    anss = Credentials.from_pki(pki_dir, "ANSS")
    body, tokens, code, reason = _cases(demo, anss, subject)[case]
    got_code, got_reason, message = _refusal(gateway.target, demo, body, tokens)
    assert (got_code, got_reason) == (code, reason)
    assert subject not in message
    _legitimate_call_succeeds(gateway.target, demo, subject)


def test_replayed_jti_is_refused(gateway: processes.Proc, demo: Credentials, subject: str) -> None:
    body = _body(subject)
    token = _forge(demo.signer, body)
    identities.raw_call(gateway.target, demo, METHOD, body, [token])
    assert _refusal(gateway.target, demo, body, [token])[:2] == (UNAUTH, "REPLAYED")
    _legitimate_call_succeeds(gateway.target, demo, subject)


def test_revoked_key_is_refused(gateway: processes.Proc, pki_dir: Path, subject: str) -> None:
    cnss = Credentials.from_pki(pki_dir, "CNSS")
    folder = pki.PkiPaths(pki_dir).institution_dir("CNSS")
    old = Signer.from_files(
        "CNSS",
        folder / identities.REVOKED_KEY_FILE,
        folder / "revoked-signing.json",
        cnss.signer.audience,
        "officer-7",
    )
    body = _body(subject, "AMO_ENROLMENT")
    token = old.request_token(FULL_METHOD, "AMO_ENROLMENT", body)
    assert _refusal(gateway.target, cnss, body, [token])[:2] == (UNAUTH, "KEY_REVOKED")
    _legitimate_call_succeeds(gateway.target, cnss, subject)


def _tls_refused(target: str, creds: Credentials, tls: grpc.ChannelCredentials) -> None:
    body = _body("1234567897")
    token = creds.signer.request_token(FULL_METHOD, PURPOSE, body)
    with grpc.secure_channel(target, tls) as channel:
        stub = channel.unary_unary(FULL_METHOD)
        with pytest.raises(grpc.RpcError) as err:
            stub(body, timeout=10, metadata=(("x-jisr-signature", token),))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_no_client_certificate_fails_the_handshake(
    gateway: processes.Proc, demo: Credentials, subject: str
) -> None:
    _tls_refused(gateway.target, demo, grpc.ssl_channel_credentials(demo.ca_cert))
    _legitimate_call_succeeds(gateway.target, demo, subject)


def test_certificate_from_another_ca_fails_the_handshake(
    gateway: processes.Proc, demo: Credentials, subject: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-pki"
    pki.init(other)
    files = pki.issue(tmp_path / "rogue", "DEMO", ca_root=other)
    tls = grpc.ssl_channel_credentials(
        demo.ca_cert, files.tls_key.read_bytes(), files.tls_cert.read_bytes()
    )
    _tls_refused(gateway.target, demo, tls)
    _legitimate_call_succeeds(gateway.target, demo, subject)


def test_expired_certificate_fails_the_handshake(
    gateway: processes.Proc, demo: Credentials, pki_dir: Path, subject: str, tmp_path: Path
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    files = pki.issue(
        tmp_path / "expired",
        "DEMO",
        ca_root=pki_dir,
        not_before=past - dt.timedelta(days=1),
        not_after=past,
    )
    tls = grpc.ssl_channel_credentials(
        demo.ca_cert, files.tls_key.read_bytes(), files.tls_cert.read_bytes()
    )
    _tls_refused(gateway.target, demo, tls)
    _legitimate_call_succeeds(gateway.target, demo, subject)


def test_a_field_not_permitted_is_withheld_and_listed(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    answer = client.household_status("RECERTIFICATION", hid)
    members = answer.message.household.members
    assert members
    assert not any(m.HasField("birth_date") for m in members)
    assert answer.withheld == ("members.birth_date",)
    assert "members.birth_date" not in answer.receipt["fields"]
    full = client.household_status("ASD_ELIGIBILITY", hid)
    assert all(m.HasField("birth_date") for m in full.message.household.members)
    assert full.withheld == ()


def test_a_denial_carries_a_signed_receipt_and_no_data(client: JisrClient, subject: str) -> None:
    with pytest.raises(JisrError) as err:
        client.person_status("SCHOOL_SUPPORT", subject)
    receipt = err.value.receipt
    assert receipt is not None
    assert (receipt["decision"], receipt["reason"], receipt["fields"]) == (
        "deny",
        "PURPOSE_NOT_ALLOWED",
        [],
    )
    assert subject not in str(receipt)
