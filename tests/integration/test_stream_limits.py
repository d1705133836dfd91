"""The process-wide limits of docs/errors.md: a batch stream's whole life
(`max_stream_seconds`: STREAM_TOO_LONG, the batches answered stand) and the calls open at
once in a process (`max_concurrent_rpcs`: grpc's own RESOURCE_EXHAUSTED, without waiting);
the batches one stream carries (`max_stream_batches`: STREAM_TOO_LONG as well).
On SQLite and PostgreSQL stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Answer, Credentials, JisrClient, JisrError, error_from
from tests.integration.test_audit import _query
from tests.integration.test_caller_ends import _held_stream
from tests.support import databases, processes, registry_rows

pytestmark = pytest.mark.integration
BATCH_METHOD = "/jisr.v1.RegistryExchange/VerifyEligibilityBatch"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The stores' backend: the refusals and the answered batches are recorded in it."""
    return str(request.param)


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest, backend: str, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[processes.Proc]:
    """A gateway with the limits a test names (indirect parameter: its environment)."""
    env: dict[str, str] = request.param
    with databases.gateway_on(backend, registry_dir, pki_dir, tmp_path, env=env) as (proc, _):
        yield proc


SHORT_STREAMS = {"JISR_MAX_STREAM_SECONDS": "1"}
FEW_CALLS = {"JISR_MAX_CONCURRENT_RPCS": "3", "JISR_MAX_STREAMS_PER_INSTITUTION": "4"}
FEW_BATCHES = {"JISR_MAX_STREAM_BATCHES": "2"}


def _read_all(call: Iterator[bytes], into: list[pb.VerifyEligibilityBatchResponse]) -> None:
    for answer in call:
        into.append(pb.VerifyEligibilityBatchResponse.FromString(answer))


@pytest.fixture
def household(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 17")


@pytest.mark.parametrize("gateway", [SHORT_STREAMS], indirect=True)
def test_a_stream_open_too_long_ends_with_its_answered_batches_standing(
    gateway: processes.Proc, pki_dir: Path, household: str
) -> None:
    release = threading.Event()
    call, _ = _held_stream(gateway, pki_dir, household, release, timeout=30)
    answers: list[pb.VerifyEligibilityBatchResponse] = []
    try:
        with pytest.raises(grpc.RpcError) as ended:
            _read_all(call, answers)
    finally:
        release.set()
    assert len(answers) == 1  # the first batch was answered before the stream's time ran out
    error = error_from(ended.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAM_TOO_LONG")


@pytest.mark.parametrize("gateway", [FEW_BATCHES], indirect=True)
def test_a_stream_of_more_batches_than_allowed_ends_with_those_answered_standing(
    gateway: processes.Proc, pki_dir: Path, household: str
) -> None:
    answered: list[str] = []

    def read(stream: Iterable[Answer[pb.EligibilityBatchResults]]) -> None:
        answered.extend(answer.receipt["audit"] for answer in stream)

    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO"), timeout=30) as c:
        stream = c.verify_batch_stream("RECERTIFICATION", "ASD", [[household]] * 3)
        with pytest.raises(JisrError) as ended:
            read(stream)
    assert (ended.value.code, ended.value.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "STREAM_TOO_LONG",
    )
    assert "at most 2 batches" in ended.value.message
    assert len(answered) == 2  # each with its verified receipt, naming its audit record
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        records = _query(cndp, requester="DEMO", method=BATCH_METHOD)
    # Recorded in the store: both batches answered, and the refusal of the third.
    assert {r.record_id for r in records} >= set(answered)
    assert [r.decision for r in records if r.reason == "STREAM_TOO_LONG"] == ["deny"]


@pytest.mark.parametrize("gateway", [FEW_CALLS], indirect=True)
def test_a_call_beyond_the_process_limit_is_refused_at_once(
    gateway: processes.Proc, pki_dir: Path, household: str
) -> None:
    release = threading.Event()
    held = [_held_stream(gateway, pki_dir, household, release, timeout=30)[0] for _ in range(3)]
    try:
        for call in held:  # each stream's first batch answered: all three are open now
            next(iter(call))
        with (
            JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS"), timeout=30) as c,
            pytest.raises(JisrError) as refused,
        ):
            c.verify("AMO_ENROLMENT", household, "AMOT")
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.reason == ""  # grpc's own refusal: no ErrorInfo, no record
    finally:
        release.set()
        for call in held:
            call.cancel()
    # Once the streams are gone (their cancellation reaches the server in its time), calls
    # are admitted again.
    deadline = time.monotonic() + 30
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNSS"), timeout=30) as c:
        while True:
            try:
                c.verify("AMO_ENROLMENT", household, "AMOT")
                break
            except JisrError:
                assert time.monotonic() < deadline, "calls not admitted again"
                time.sleep(0.2)
