"""A caller that stops reading a response stream holds nothing for long (docs/security.md,
"Limits").

A gateway process with 2 workers, 3 stream workers, one stream per institution and 2 s of
stream idleness is given streams whose callers send but never read: each ends with
RESPONSE_NOT_READ and a record after about 2 s, another institution is served meanwhile,
and the institution gets its stream back."""

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
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.integration.test_audit import _query
from tests.integration.test_caller_ends import _held_stream
from tests.integration.test_held_calls import _served
from tests.support import processes, registry_rows

BATCH = "/jisr.v1.RegistryExchange/VerifyEligibilityBatch"
QUERY = "/jisr.v1.AuditTrail/QueryAccess"
AUDIT_PURPOSE = "DATA_PROTECTION_AUDIT"
# Without BDP probing a grpc client announces a fixed 64 KiB window: a caller that does not
# read holds up the gateway's writes once that much is unread.
NO_BDP = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def narrow(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    folder = tmp_path_factory.mktemp("narrow")
    env = {
        "JISR_STATE_DIR": str(folder),
        "JISR_WORKERS": "2",
        "JISR_STREAM_WORKERS": "3",
        "JISR_STREAM_IDLE_SECONDS": "2",
        "JISR_MAX_STREAMS_PER_INSTITUTION": "1",
    }
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    proc = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env=env)
    yield proc
    proc.stop()


def _channel(target: str, creds: Credentials) -> grpc.Channel:
    tls = grpc.ssl_channel_credentials(creds.ca_cert, creds.tls_key, creds.tls_cert)
    return grpc.secure_channel(target, tls, options=NO_BDP)


def _unread_batches(
    target: str, creds: Credentials, households: list[str], count: int
) -> tuple[grpc.Channel, grpc.Call, str]:
    """A batch stream that sends `count` batches of `households` and reads nothing."""
    jti = secrets.token_urlsafe(18)
    batch = pb.EligibilityBatch(
        purpose="RECERTIFICATION",
        programme="ASD",
        subjects=[pb.Subject(household_id=h) for h in households],
    ).SerializeToString()
    envelopes = [
        pb.VerifyEligibilityBatchRequest(
            batch=batch, batch_signature=creds.signer.batch_token(jti, seq, batch)
        ).SerializeToString()
        for seq in range(count)
    ]
    token = creds.signer.request_token(BATCH, "RECERTIFICATION", envelopes[0], jti=jti)
    channel = _channel(target, creds)
    call = channel.stream_stream(BATCH)(
        iter(envelopes), timeout=60, metadata=((SIGNATURE_METADATA, token),)
    )
    return channel, call, jti


def _records(target: str, pki_dir: Path, **filters: object) -> list[apb.AccessRecord]:
    with JisrClient(target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        return _query(cndp, **filters)


def _eventually(check: object, seconds: float = 30.0) -> bool:
    """Poll `check()` until true, for at most `seconds` (bounded: never a timing claim)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def households(registry_dir: Path) -> list[str]:
    return [household.household_id for household in registry_rows.households(registry_dir, 1000)]


def test_a_batch_stream_whose_caller_stops_reading_ends_response_not_read_with_a_record(
    narrow: processes.Proc, pki_dir: Path, households: list[str]
) -> None:
    creds = Credentials.from_pki(pki_dir, "DEMO")
    channel, call, _ = _unread_batches(narrow.target, creds, households, 40)
    with channel:

        def ended() -> bool:
            records = _records(narrow.target, pki_dir, requester="DEMO", method=BATCH)
            return any(r.reason == "RESPONSE_NOT_READ" and r.decision == "deny" for r in records)

        assert _eventually(ended)
        call.cancel()


def test_a_caller_that_stops_reading_gets_its_stream_back_and_others_are_served(
    narrow: processes.Proc, pki_dir: Path, registry_dir: Path, households: list[str]
) -> None:
    creds = Credentials.from_pki(pki_dir, "ANSS")
    channel, call, _ = _unread_batches(narrow.target, creds, households, 40)
    with channel:
        time.sleep(0.5)
        _served(narrow.target, pki_dir, registry_dir)

        def another_stream_served() -> bool:
            with JisrClient(narrow.target, creds, timeout=20) as anss:
                try:
                    answers = anss.verify_batches("RECERTIFICATION", "ASD", [households[:1]])
                    return len(list(answers)) == 1
                except JisrError as refused:  # the stalled stream still holds the place
                    reasons.add(refused.reason)
                    return False

        reasons: set[str] = set()
        assert _eventually(another_stream_served)
        assert reasons <= {"TOO_MANY_CALLS"}
        call.cancel()


def test_a_query_stream_whose_caller_stops_reading_ends_response_not_read(
    narrow: processes.Proc, pki_dir: Path, households: list[str]
) -> None:
    creds = Credentials.from_pki(pki_dir, "ANSS")
    with JisrClient(narrow.target, creds, timeout=60) as anss:  # 400 records: 4 pages of ~68 KB
        assert (
            len(
                list(anss.verify_batches("RECERTIFICATION", "ASD", [[h] for h in households[:400]]))
            )
            == 400
        )
    request = apb.QueryAccessRequest(
        purpose=AUDIT_PURPOSE, requester="ANSS", page_size=100
    ).SerializeToString()
    token = creds.signer.request_token(QUERY, AUDIT_PURPOSE, request)
    with _channel(narrow.target, creds) as channel:
        held = channel.unary_stream(QUERY)(
            request, timeout=60, metadata=((SIGNATURE_METADATA, token),)
        )

        def ended() -> bool:
            records = _records(narrow.target, pki_dir, requester="ANSS", method=QUERY)
            return any(r.reason == "RESPONSE_NOT_READ" for r in records)

        assert _eventually(ended)
        held.cancel()


@pytest.fixture(scope="module")
def one_stream(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    folder = tmp_path_factory.mktemp("one-stream")
    env = {"JISR_STATE_DIR": str(folder), "JISR_STREAM_WORKERS": "1"}
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    proc = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env=env)
    yield proc
    proc.stop()


def test_a_stream_beyond_the_gateways_stream_workers_is_refused_gateway_busy(
    one_stream: processes.Proc, pki_dir: Path, households: list[str]
) -> None:
    release = threading.Event()
    held, _ = _held_stream(one_stream, pki_dir, households[0], release, timeout=60)
    answers = iter(held)
    try:
        next(answers)  # answered, and now idle: the gateway's one stream worker is taken
        with (
            JisrClient(one_stream.target, Credentials.from_pki(pki_dir, "ANSS")) as anss,
            pytest.raises(JisrError) as refused,
        ):
            list(anss.verify_batches("RECERTIFICATION", "ASD", [households[1:2]]))
    finally:
        release.set()
        list(answers)
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "GATEWAY_BUSY",
    )
