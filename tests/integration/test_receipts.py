"""Receipts verify offline: with `jisr receipt verify`, and with an independent JOSE library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jwcrypto import jwk, jws
from jwcrypto.common import JWKeyNotFound

from gateway.base.jws import body_hash
from gateway.base.wire import RECEIPT_METADATA
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient
from gateway.services.registry_exchange import SERVICE
from tests.support import identities, processes, registry_rows

PURPOSE = "ASD_ELIGIBILITY"


def jisr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def jwks_file(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exported = jisr("keys", "--dir", str(pki_dir), "export")
    assert exported.returncode == 0, exported.stderr
    path = tmp_path_factory.mktemp("jwks") / "gateway.jwks.json"
    path.write_text(exported.stdout)
    return path


@pytest.fixture(scope="module")
def receipt(gateway: processes.Proc, demo: Credentials, registry_dir: Path) -> str:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with JisrClient(gateway.target, demo) as client:
        return client.verify(PURPOSE, hid, "ASD").receipt_token


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(jws.base64url_decode(payload))
    claims["decision"] = "deny"
    forged = jws.base64url_encode(json.dumps(claims).encode())
    return ".".join((head, forged, signature))


def test_receipt_verifies_with_the_cli(receipt: str, jwks_file: Path) -> None:
    result = jisr("receipt", "verify", receipt, "--jwks", str(jwks_file))
    assert result.returncode == 0, result.stderr
    claims = json.loads(result.stdout)
    assert (claims["decision"], claims["purpose"]) == ("permit", PURPOSE)


def test_tampered_receipt_fails_the_cli(receipt: str, jwks_file: Path) -> None:
    result = jisr("receipt", "verify", _tampered(receipt), "--jwks", str(jwks_file))
    assert result.returncode == 1
    assert "INVALID" in result.stderr


def test_receipt_verifies_with_jwcrypto(receipt: str, jwks_file: Path) -> None:
    keys = jwk.JWKSet.from_json(jwks_file.read_text())
    token = jws.JWS()
    token.deserialize(receipt)
    token.verify(keys)
    assert token.jose_header["typ"] == "jisr-receipt+jwt"
    claims = json.loads(token.payload)
    assert set(claims) >= {"jti", "rh", "sh", "method", "purpose", "decision", "fields"}
    assert set(claims) >= {"basis", "audit", "trace", "iat"}


def test_tampered_receipt_fails_jwcrypto(receipt: str, jwks_file: Path) -> None:
    keys = jwk.JWKSet.from_json(jwks_file.read_text())
    token = jws.JWS()
    token.deserialize(_tampered(receipt))
    # jwcrypto tries every key of the set and reports that none verifies.
    with pytest.raises((jws.InvalidJWSSignature, JWKeyNotFound)):
        token.verify(keys)


def test_receipt_hashes_the_exact_request_and_response_bytes(
    gateway: processes.Proc, demo: Credentials, registry_dir: Path, jwks_file: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    body = pb.VerifyEligibilityRequest(
        purpose=PURPOSE, subject=pb.Subject(household_id=hid), programme="ASD"
    ).SerializeToString()
    token = demo.signer.request_token(f"/{SERVICE}/VerifyEligibility", PURPOSE, body)
    response, call = identities.raw_call(gateway.target, demo, "VerifyEligibility", body, [token])
    (receipt,) = [v for k, v in call.trailing_metadata() if k == RECEIPT_METADATA]
    keys = jwk.JWKSet.from_json(jwks_file.read_text())
    verified = jws.JWS()
    verified.deserialize(str(receipt))
    verified.verify(keys)
    claims = json.loads(verified.payload)
    assert (claims["rh"], claims["sh"]) == (body_hash(body), body_hash(response))
    assert claims["basis"].startswith("illustrative")


def test_every_batch_has_a_receipt_and_the_stream_one_covers_them_all(
    client: JisrClient, registry_dir: Path
) -> None:
    hids = [h.household_id for h in registry_rows.households(registry_dir, 30)]
    results = list(client.verify_batches(PURPOSE, "ASD", [hids[:10], hids[10:20], hids[20:]]))
    assert [r.batch_index for r in results] == [0, 1, 2]
