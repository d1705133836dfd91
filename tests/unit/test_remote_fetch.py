"""RemoteAdapter against a MinistryBackend servicer in this process (plaintext, loopback).

The servicer is a fake at the boundary this code does not own, the ministry's system:
it records the deadline each call arrived with and answers what a test sets. What is under
test is the gateway's side: the time each call is given, and what it does with answers
outside the contract."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from adapters.base import (
    DECISION,
    HOUSEHOLD,
    MEMBERSHIP,
    MIN_ANSWER_MARGIN_S,
    SCORE,
    AdapterError,
    FetchContext,
    View,
)
from adapters.remote import RemoteAdapter
from gateway.base.identifiers import make_idcs
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1 import records_pb2 as rec
from tests.support.fake_backend import RecordsOnlyBackend

HID = "H000000042"
Answer = Callable[[backend_pb2.FetchRecordsRequest], list[backend_pb2.Record]]


def household(hid: str = HID, score: float = 9.5) -> rec.HouseholdRecord:
    record = rec.HouseholdRecord(
        household_id=hid,
        region=rec.REGION_ORIENTAL,
        area=rec.AREA_URBAN,
        score=score,
    )
    for day in (record.registered_on, record.scored_on):
        day.year, day.month, day.day = 2024, 5, 6
    record.members.add(idcs=make_idcs("300000001"), relationship=rec.RELATIONSHIP_DECLARANT)
    return record


def households(request: backend_pb2.FetchRecordsRequest) -> list[backend_pb2.Record]:
    return [backend_pb2.Record(household=household(key)) for key in request.keys]


@dataclass
class RecordingBackend(RecordsOnlyBackend):
    """Answers with `answer`; keeps the time each call had left when it arrived."""

    answer: Answer = households
    deadlines: list[float] = field(default_factory=list)

    def FetchRecords(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.FetchRecordsResponse:
        self.deadlines.append(context.time_remaining())
        return backend_pb2.FetchRecordsResponse(records=self.answer(request))


@pytest.fixture
def backend() -> Iterator[tuple[RecordingBackend, RemoteAdapter]]:
    servicer = RecordingBackend()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    backend_pb2_grpc.add_MinistryBackendServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    adapter = RemoteAdapter("RSU", frozenset({MEMBERSHIP, HOUSEHOLD}), channel, 30.0)
    yield servicer, adapter
    adapter.close()
    server.stop(None).wait()


# -- the caller's deadline ---------------------------------------------------------------


def test_fetch_context_is_still_built_from_the_callers_remaining_seconds() -> None:
    ctx = FetchContext("AMO_ENROLMENT", 2.0, "CNSS")
    left = ctx.time_left()
    assert (ctx.purpose, ctx.timeout, ctx.requester) == ("AMO_ENROLMENT", 2.0, "CNSS")
    assert left is not None
    assert 1.7 < left <= 1.8


def test_a_short_caller_deadline_still_keeps_the_minimum_answer_margin() -> None:
    left = FetchContext("P", 0.2).time_left()
    assert left is not None
    assert left <= 0.2 - MIN_ANSWER_MARGIN_S


def test_without_a_caller_deadline_there_is_no_time_limit_of_the_callers() -> None:
    assert FetchContext("P").time_left() is None


def test_a_backend_call_gets_the_callers_time_less_the_answer_margin(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    servicer, adapter = backend
    adapter.fetch(HOUSEHOLD, [HID], FetchContext("P", 2.0))
    assert servicer.deadlines[0] <= 1.81  # 2 s less 10 %, give or take gRPC's rounding


@pytest.mark.parametrize("view", [DECISION, SCORE])
def test_a_remote_backend_answers_whole_records_whatever_the_view(
    backend: tuple[RecordingBackend, RemoteAdapter], view: View
) -> None:
    _, adapter = backend
    found = adapter.fetch(HOUSEHOLD, [HID], FetchContext("P"), view)
    assert found == {HID: household()}  # FetchRecords carries no field mask (yet)


def test_each_backend_call_gets_only_what_is_left_of_the_callers_time(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    servicer, adapter = backend
    ctx = FetchContext("P", 5.0)
    adapter.fetch(HOUSEHOLD, [HID], ctx)
    time.sleep(0.5)
    adapter.fetch(HOUSEHOLD, [HID], ctx)
    first, second = servicer.deadlines
    assert second <= first - 0.45  # the 0.5 s spent between them, less clock jitter


def test_with_no_time_left_a_lookup_fails_at_once_as_a_timeout_without_calling(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    servicer, adapter = backend
    ctx = FetchContext("P", MIN_ANSWER_MARGIN_S / 2)
    with pytest.raises(AdapterError) as err:
        adapter.fetch(HOUSEHOLD, [HID], ctx)
    assert err.value.timed_out
    assert not err.value.invalid
    assert err.value.institution == "RSU"
    assert servicer.deadlines == []


def test_without_a_caller_deadline_the_configured_timeout_applies(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    servicer, adapter = backend
    adapter.fetch(HOUSEHOLD, [HID], FetchContext("P"))
    assert 29.0 < servicer.deadlines[0] <= 30.2  # grpc rounds the timeout it sends up (<= 100 ms)


def test_a_backend_slower_than_the_callers_time_is_a_timeout() -> None:
    release = threading.Event()

    def slow(request: backend_pb2.FetchRecordsRequest) -> list[backend_pb2.Record]:
        release.wait(5)
        return []

    servicer = RecordingBackend(answer=slow)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    backend_pb2_grpc.add_MinistryBackendServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    adapter = RemoteAdapter(
        "RSU", frozenset({HOUSEHOLD}), grpc.insecure_channel(f"127.0.0.1:{port}"), 30.0
    )
    started = time.monotonic()
    try:
        with pytest.raises(AdapterError) as err:
            adapter.fetch(HOUSEHOLD, [HID], FetchContext("P", 1.0))
    finally:
        release.set()
        adapter.close()
        server.stop(None).wait()
    assert err.value.timed_out
    assert time.monotonic() - started < 0.95  # before the caller's own deadline


# -- answers outside the contract ---------------------------------------------------------


def test_an_answer_outside_the_contract_is_an_adapter_error_flagged_invalid(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    servicer, adapter = backend
    servicer.answer = lambda request: [backend_pb2.Record(household=household(score=-math.inf))]
    with pytest.raises(AdapterError) as err:
        adapter.fetch(HOUSEHOLD, [HID], FetchContext("P", 5.0))
    assert err.value.invalid
    assert not err.value.timed_out
    assert err.value.institution == "RSU"


def test_an_invalid_answer_is_logged_by_institution_and_field_never_by_value(
    backend: tuple[RecordingBackend, RemoteAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, adapter = backend
    servicer.answer = lambda request: [backend_pb2.Record(household=household(score=-math.inf))]
    with caplog.at_level(logging.WARNING, "jisr.remote"), pytest.raises(AdapterError) as err:
        adapter.fetch(HOUSEHOLD, [HID], FetchContext("P", 5.0))
    (entry,) = caplog.records
    assert (entry.institution, entry.field) == ("RSU", "household.score")  # type: ignore[attr-defined]
    logged = " ".join(str(v) for v in entry.__dict__.values())
    for value in (HID, "inf"):
        assert value not in logged
        assert value not in str(err.value)


def test_a_record_of_another_kind_is_an_invalid_answer(
    backend: tuple[RecordingBackend, RemoteAdapter],
) -> None:
    _servicer, adapter = backend
    with pytest.raises(AdapterError) as err:
        adapter.fetch(MEMBERSHIP, [make_idcs("300000001")], FetchContext("P", 5.0))
    assert err.value.invalid
