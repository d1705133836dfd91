"""A refused token is still an access attempt: once the certificate names the caller, every
refusal of its request token leaves a record with the requester and the reason, and names
the subject the request asked about (docs/audit.md)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient, error_from
from gateway.sdk.signing import Signer
from tests.integration.test_audit import _query
from tests.support import identities, processes, registry_rows

METHOD = "/jisr.v1.RegistryExchange/GetPersonStatus"
PURPOSE = "HEALTH_COVERAGE_CHECK"


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{body}.{flipped}"


def _tokens(signer: Signer, body: bytes) -> dict[str, list[str]]:
    """Requests that fail one check each, by the reason they must be refused with."""
    now = time.time()
    return {
        "MISSING_SIGNATURE": [],
        "BAD_SIGNATURE": [_tampered(signer.request_token(METHOD, PURPOSE, body))],
        "TOKEN_EXPIRED": [signer.request_token(METHOD, PURPOSE, body, now=now - 400, lifetime=300)],
        "METHOD_MISMATCH": [signer.request_token(METHOD + "X", PURPOSE, body)],
        "BODY_MISMATCH": [signer.request_token(METHOD, PURPOSE, body + b"\x00")],
    }


@pytest.mark.parametrize(
    "reason",
    ["MISSING_SIGNATURE", "BAD_SIGNATURE", "TOKEN_EXPIRED", "METHOD_MISMATCH", "BODY_MISMATCH"],
)
def test_a_refused_token_leaves_a_record_naming_requester_reason_and_subject(
    gateway: processes.Proc, pki_dir: Path, registry_dir: Path, reason: str
) -> None:
    idcs = registry_rows.one(registry_dir, "SELECT idcs FROM person LIMIT 1 OFFSET 777")
    body = pb.GetPersonStatusRequest(purpose=PURPOSE, idcs=idcs).SerializeToString()
    creds = Credentials.from_pki(pki_dir, "MS")
    tokens = _tokens(creds.signer, body)[reason]
    before = _records(gateway, pki_dir, idcs, reason)
    with pytest.raises(grpc.RpcError) as refused:
        identities.raw_call(gateway.target, creds, "GetPersonStatus", body, tokens)
    error = error_from(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert _records(gateway, pki_dir, idcs, reason) == before + 1


def _records(gateway: processes.Proc, pki_dir: Path, idcs: str, reason: str) -> int:
    """How many deny records of MS about `idcs` carry `reason` (asked as the regulator)."""
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        records = _query(cndp, requester="MS", subject=pb.Subject(idcs=idcs), decision="deny")
    return sum(r.reason == reason and r.method == METHOD for r in records)
