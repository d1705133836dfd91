"""No partner, however broken or hostile, stalls the others (docs/security.md, "Limits").

A gateway process with tight limits (2 workers, 5 s for a request or a stream's next
batch to arrive, 12 calls and 1 stream per institution, 64 KiB messages) is held by one
institution in every way the door knows; another institution is served meanwhile, and
health answers. On SQLite and PostgreSQL stores (the refusals are recorded there)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.base.jws import MAX_TOKEN_BYTES
from gateway.base.wire import SIGNATURE_METADATA
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient, JisrError, error_from
from tests.integration.test_audit import _query
from tests.integration.test_caller_ends import _held_stream
from tests.support import databases, identities, processes, registry_rows

CALLS = 12
METHOD = "/jisr.v1.RegistryExchange/GetPersonStatus"
BATCH = "/jisr.v1.RegistryExchange/VerifyEligibilityBatch"
MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tight(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[processes.Proc]:
    """A gateway with small limits, its stores (where refusals are recorded) on SQLite or
    PostgreSQL."""
    folder = tmp_path_factory.mktemp("tight")
    env = {
        "JISR_WORKERS": "2",
        "JISR_REQUEST_TIMEOUT_SECONDS": "5",
        "JISR_STREAM_IDLE_SECONDS": "5",
        "JISR_MAX_CALLS_PER_INSTITUTION": str(CALLS),
        "JISR_MAX_STREAMS_PER_INSTITUTION": "1",
        "JISR_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
    }
    backend = str(request.param)
    with databases.gateway_on(backend, registry_dir, pki_dir, folder, env=env) as (proc, _):
        yield proc


class Holder:
    """Calls of one institution that send their headers and then nothing."""

    def __init__(self, target: str, pki_dir: Path, institution: str = "MS") -> None:
        self.creds = Credentials.from_pki(pki_dir, institution)
        self.release = threading.Event()
        self.channels: list[grpc.Channel] = []
        self.target = target

    def hold(self, count: int, *, connections: int = 1, method: str = METHOD) -> list[grpc.Future]:
        """`count` held calls spread over `connections` HTTP/2 connections."""
        for _ in range(connections):
            tls = grpc.ssl_channel_credentials(
                self.creds.ca_cert, self.creds.tls_key, self.creds.tls_cert
            )
            self.channels.append(
                grpc.secure_channel(
                    self.target, tls, options=[("grpc.use_local_subchannel_pool", 1)]
                )
            )
        held = []
        for i in range(count):
            channel = self.channels[-connections + i % connections]
            if method == BATCH:
                call = channel.stream_stream(method)(self._nothing(), timeout=30)
            else:
                call = channel.stream_unary(method).future(self._nothing(), timeout=30)
            held.append(call)
        return held

    def _nothing(self) -> Iterator[bytes]:
        self.release.wait(30)
        return
        yield b""

    def close(self) -> None:
        self.release.set()
        for channel in self.channels:
            channel.close()


@pytest.fixture
def holder(tight: processes.Proc, pki_dir: Path) -> Iterator[Holder]:
    held = Holder(tight.target, pki_dir)
    yield held
    held.close()


def _served(target: str, pki_dir: Path, registry_dir: Path) -> None:
    """DEMO gets its answer, and health says SERVING, within 10 s each."""
    idcs = registry_rows.one(registry_dir, "SELECT idcs FROM person LIMIT 1 OFFSET 4242")
    with JisrClient(target, Credentials.from_pki(pki_dir, "DEMO"), timeout=10) as demo:
        assert demo.person_status("AMO_ENROLMENT", idcs).message.person.idcs == idcs
    creds = Credentials.from_pki(pki_dir, "DEMO")
    with identities.channel(target, creds) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def _reason(call: grpc.Future) -> tuple[grpc.StatusCode, str]:
    try:
        call.result(timeout=20)
    except grpc.RpcError as exc:
        error: JisrError = error_from(exc)
        return error.code, error.reason
    raise AssertionError("the held call was answered")


def test_held_calls_beyond_the_workers_do_not_stop_another_institution(
    holder: Holder, tight: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    held = holder.hold(8)
    time.sleep(0.5)
    _served(tight.target, pki_dir, registry_dir)
    assert not any(call.done() for call in held)  # served while they were held


def test_many_connections_holding_calls_do_not_stop_another_institution(
    holder: Holder, tight: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    held = holder.hold(60, connections=30)
    time.sleep(0.5)
    _served(tight.target, pki_dir, registry_dir)
    reasons = {_reason(call) for call in held}
    assert reasons <= {
        (grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS"),
    }


def test_a_request_that_never_arrives_times_out_with_its_reason_and_a_record(
    holder: Holder, tight: processes.Proc, pki_dir: Path
) -> None:
    before = _timeouts(tight.target, pki_dir)
    (call,) = holder.hold(1)
    assert _reason(call) == (grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT")
    assert _timeouts(tight.target, pki_dir) == before + 1


def _timeouts(target: str, pki_dir: Path) -> int:
    """REQUEST_TIMEOUT records of MS (as the regulator sees them)."""
    with JisrClient(target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        records = _query(cndp, requester="MS", method=METHOD)
    return sum(r.reason == "REQUEST_TIMEOUT" and r.decision == "deny" for r in records)


def test_an_institution_over_its_call_limit_is_refused_too_many_calls(
    holder: Holder, tight: processes.Proc
) -> None:
    held = holder.hold(CALLS)
    time.sleep(0.5)
    (extra,) = holder.hold(1)
    assert _reason(extra) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")
    del held


def test_a_second_batch_stream_of_one_institution_is_refused_too_many_calls(
    tight: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 61")
    release = threading.Event()
    first, _ = _held_stream(tight, pki_dir, hid, release, timeout=30)
    answers = iter(first)
    try:
        next(answers)  # answered, and now idle
        second, _ = _held_stream(tight, pki_dir, hid, release, timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(second))
    finally:
        release.set()
        list(answers)  # the first stream ends, and gives its place back
    error = error_from(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")


def test_an_idle_batch_stream_ends_with_request_timeout(
    tight: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 62")
    release = threading.Event()
    try:
        stream, _ = _held_stream(tight, pki_dir, hid, release, timeout=30)
        answers = iter(stream)
        next(answers)
        with pytest.raises(grpc.RpcError) as ended:
            next(answers)
    finally:
        release.set()
    error = error_from(ended.value)
    assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT")


def _person_request(size: int) -> bytes:
    return pb.GetPersonStatusRequest(purpose="AMO_ENROLMENT", idcs="1" * size).SerializeToString()


def test_a_message_over_the_limit_is_refused_message_too_large_with_a_record(
    tight: processes.Proc, pki_dir: Path
) -> None:
    creds = Credentials.from_pki(pki_dir, "DEMO")
    body = _person_request(MAX_MESSAGE + 1)
    token = creds.signer.request_token(METHOD, "AMO_ENROLMENT", body)
    with identities.channel(tight.target, creds) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(METHOD)(body, timeout=10, metadata=((SIGNATURE_METADATA, token),))
    error = error_from(err.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE")
    with JisrClient(tight.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        records = _query(cndp, requester="DEMO", method=METHOD)
    assert "MESSAGE_TOO_LARGE" in {r.reason for r in records}


def test_a_message_at_the_limit_is_read(tight: processes.Proc, pki_dir: Path) -> None:
    creds = Credentials.from_pki(pki_dir, "DEMO")
    overhead = len(_person_request(60_000)) - 60_000
    body = _person_request(MAX_MESSAGE - overhead)
    assert len(body) == MAX_MESSAGE
    token = creds.signer.request_token(METHOD, "AMO_ENROLMENT", body)
    with identities.channel(tight.target, creds) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(METHOD)(body, timeout=10, metadata=((SIGNATURE_METADATA, token),))
    assert error_from(err.value).reason == "INVALID_IDCS"


def _with_token(target: str, pki_dir: Path, token: str) -> tuple[grpc.StatusCode, str]:
    creds = Credentials.from_pki(pki_dir, "DEMO")
    body = _person_request(10)
    with pytest.raises(grpc.RpcError) as err:
        identities.raw_call(target, creds, "GetPersonStatus", body, [token], timeout=10)
    error = error_from(err.value)
    return error.code, error.reason


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 6 * 1024, 12 * 1024])
def test_an_oversized_token_is_refused_token_too_large_every_time(
    tight: processes.Proc, pki_dir: Path, size: int
) -> None:
    token = "e" * size
    outcomes = {_with_token(tight.target, pki_dir, token) for _ in range(8)}
    assert outcomes == {(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_TOO_LARGE")}


def test_metadata_over_the_fixed_limit_is_refused_by_grpc_every_time(
    tight: processes.Proc, pki_dir: Path
) -> None:
    outcomes = {_with_token(tight.target, pki_dir, "e" * (20 * 1024))[0] for _ in range(8)}
    assert outcomes == {grpc.StatusCode.RESOURCE_EXHAUSTED}


def _unary_as_stream(
    target: str, pki_dir: Path, messages: list[bytes]
) -> tuple[grpc.StatusCode, str]:
    """Call a unary method with exactly these request messages (none, or several)."""
    creds = Credentials.from_pki(pki_dir, "DEMO")
    body = messages[0] if messages else _person_request(10)
    token = creds.signer.request_token(METHOD, "AMO_ENROLMENT", body)
    with identities.channel(target, creds) as channel, pytest.raises(grpc.RpcError) as err:
        channel.stream_unary(METHOD)(
            iter(messages), timeout=10, metadata=((SIGNATURE_METADATA, token),)
        )
    error = error_from(err.value)
    return error.code, error.reason


def test_a_unary_call_without_a_message_is_malformed(tight: processes.Proc, pki_dir: Path) -> None:
    assert _unary_as_stream(tight.target, pki_dir, []) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
    )


def test_a_unary_call_with_two_messages_is_malformed(tight: processes.Proc, pki_dir: Path) -> None:
    body = _person_request(10)
    assert _unary_as_stream(tight.target, pki_dir, [body, body]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
    )


def test_a_batch_message_over_the_limit_ends_the_stream_message_too_large(
    tight: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 63")
    padding = ["H" + "9" * 120] * 600  # malformed ids: 75 KiB, over the 64 KiB limit
    creds = Credentials.from_pki(pki_dir, "DEMO")
    with JisrClient(tight.target, creds) as demo, pytest.raises(JisrError) as err:
        list(demo.verify_batches("RECERTIFICATION", "ASD", [[hid], padding]))
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "MESSAGE_TOO_LARGE",
    )
