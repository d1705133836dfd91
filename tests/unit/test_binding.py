"""The gRPC edge: a context read into an Invocation, an outcome applied to the context."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.base.wire import RECEIPT_METADATA, SIGNATURE_METADATA
from gateway.engine.call import Answered, Refused
from gateway.services.binding import answer, invocation
from tests.support.grpc_context import Aborted, FakeContext

PATH = "/jisr.v1.RegistryExchange/GetPersonStatus"


def test_a_call_is_read_with_its_certificate_and_every_token_it_carried() -> None:
    context = FakeContext(
        "CNSS", [(SIGNATURE_METADATA, "a"), ("traceparent", "t"), (SIGNATURE_METADATA, "b")]
    )
    inv = invocation(PATH, context)
    assert (inv.method, inv.certificate, inv.tokens) == (PATH, "CNSS", ("a", "b"))
    assert (inv.service, inv.name) == ("jisr.v1.RegistryExchange", "GetPersonStatus")
    assert ("traceparent", "t") in inv.metadata


def test_a_call_without_a_certificate_has_no_institution() -> None:
    assert invocation(PATH, FakeContext()).certificate == ""


def test_the_caller_leaving_is_seen_through_the_invocation() -> None:
    context = FakeContext("CNSS")
    inv = invocation(PATH, context)
    context.active, context.remaining = False, 0.0
    assert (inv.active(), inv.remaining()) == (False, 0.0)


def test_an_answer_is_its_body_with_the_receipt_in_the_trailers() -> None:
    context = FakeContext("CNSS")
    assert answer(Answered(b"body", "r.e.c"), context) == b"body"
    assert context.trailers == ((RECEIPT_METADATA, "r.e.c"),)


def _rich(trailers: tuple[tuple[str, str | bytes], ...]) -> status_pb2.Status:
    (raw,) = [v for k, v in trailers if k == "grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def test_a_refusal_aborts_with_the_reasons_status_its_details_and_receipt() -> None:
    error = invalid(Reason.INVALID_IDCS, "idcs is not 10 digits", "idcs")
    with pytest.raises(Aborted) as aborted:
        answer(Refused(error, "d.e.ny"), FakeContext("CNSS"))
    assert (aborted.value.code, aborted.value.details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "idcs is not 10 digits",
    )
    info = error_details_pb2.ErrorInfo()
    assert _rich(aborted.value.trailers).details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_IDCS",
        "jisr.v1",
        {"field": "idcs"},
    )
    assert (RECEIPT_METADATA, "d.e.ny") in aborted.value.trailers


def test_a_refusal_before_the_token_is_known_carries_no_receipt() -> None:
    error = ExchangeError(Reason.MISSING_SIGNATURE, "exactly one x-jisr-signature is required")
    with pytest.raises(Aborted) as aborted:
        answer(Refused(error, None), FakeContext("CNSS"))
    assert aborted.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert [k for k, _ in aborted.value.trailers] == ["grpc-status-details-bin"]
