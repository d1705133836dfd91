"""A caller that cancels its batch stream, or lets its deadline pass, ended the call itself:
the closing record says so (CALLER_CANCELLED, CALLER_DEADLINE_EXCEEDED) and the gateway
logs no fault of its own (docs/errors.md)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.base.wire import SIGNATURE_METADATA
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient
from tests.integration.test_audit import _query
from tests.support import identities, processes, registry_rows

METHOD = "/jisr.v1.RegistryExchange/VerifyEligibilityBatch"
PURPOSE = "RECERTIFICATION"


def _closing_record(target: str, pki_dir: Path, jti: str) -> apb.AccessRecord:
    """The stream's closing record (part 0), once written (polled for up to 20 s)."""
    deadline = time.monotonic() + 20
    with JisrClient(target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        while True:
            found = [
                r
                for r in _query(cndp, requester="DEMO", method=METHOD, page_size=20)
                if r.jti == jti and r.part == 0
            ]
            if found or time.monotonic() > deadline:
                assert found, "no closing record"
                return found[0]
            time.sleep(0.2)


def _held_stream(
    gateway: processes.Proc, pki_dir: Path, hid: str, release: threading.Event, timeout: float
) -> tuple[grpc.Call, str]:
    """A batch stream whose first batch is sent and whose next one never comes."""
    creds = Credentials.from_pki(pki_dir, "DEMO")
    jti = secrets.token_urlsafe(18)
    batch = pb.EligibilityBatch(
        purpose=PURPOSE, programme="ASD", subjects=[pb.Subject(household_id=hid)]
    ).SerializeToString()
    first = pb.VerifyEligibilityBatchRequest(
        batch=batch, batch_signature=creds.signer.batch_token(jti, 0, batch)
    ).SerializeToString()

    def requests() -> Iterator[bytes]:
        yield first
        release.wait(30)

    token = creds.signer.request_token(METHOD, PURPOSE, first, jti=jti)
    channel = identities.channel(gateway.target, creds)
    call = channel.stream_stream(METHOD)(
        requests(), timeout=timeout, metadata=((SIGNATURE_METADATA, token),)
    )
    return call, jti


@pytest.fixture
def household(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 951")


def test_a_cancelled_batch_stream_is_recorded_as_the_callers_cancel(
    gateway: processes.Proc, pki_dir: Path, household: str
) -> None:
    faults = gateway.output().count("gateway fault")
    release = threading.Event()
    call, jti = _held_stream(gateway, pki_dir, household, release, timeout=60)
    next(iter(call))  # the first batch is answered
    call.cancel()
    release.set()
    record = _closing_record(gateway.target, pki_dir, jti)
    assert (record.decision, record.reason) == ("deny", "CALLER_CANCELLED")
    assert gateway.output().count("gateway fault") == faults


def test_a_batch_stream_past_its_deadline_is_recorded_as_the_callers_deadline(
    gateway: processes.Proc, pki_dir: Path, household: str
) -> None:
    faults = gateway.output().count("gateway fault")
    release = threading.Event()
    call, jti = _held_stream(gateway, pki_dir, household, release, timeout=6)
    responses = iter(call)
    next(responses)
    with pytest.raises(grpc.RpcError) as ended:
        next(responses)
    release.set()
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = _closing_record(gateway.target, pki_dir, jti)
    assert (record.decision, record.reason) == ("deny", "CALLER_DEADLINE_EXCEEDED")
    assert gateway.output().count("gateway fault") == faults
