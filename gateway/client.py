"""A Python client for partners: typed calls to RegistryExchange and typed errors.

Errors carry the gRPC code and the stable ErrorInfo reason from the status details, so a
partner branches on `err.reason`, never on message text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from google.type.date_pb2 import Date
from grpc_status import rpc_status

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1 import registry_pb2_grpc


@dataclass
class JisrError(Exception):
    """A failed call: gRPC code, stable reason (e.g. INVALID_IDCS), message, metadata."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


def error_from(exc: grpc.RpcError) -> JisrError:
    """Decode a gRPC error's google.rpc.Status details into a JisrError."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    status = rpc_status.from_call(exc) if isinstance(exc, grpc.Call) else None
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return JisrError(code, info.reason, status.message, dict(info.metadata))
    return JisrError(code, "", message or "")


def subject(value: str) -> pb.Subject:
    """A Subject from text: household ids start with H, anything else is an IDCS."""
    if value.startswith("H"):
        return pb.Subject(household_id=value)
    return pb.Subject(idcs=value)


def date(value: dt.date | None) -> Date | None:
    """google.type.Date from a date (None stays None: the gateway uses today)."""
    return None if value is None else Date(year=value.year, month=value.month, day=value.day)


class JisrClient:
    """One channel to a gateway; every method raises JisrError on failure."""

    def __init__(self, target: str, *, timeout: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = registry_pb2_grpc.RegistryExchangeStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> JisrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def person_status(self, purpose: str, idcs: str) -> pb.GetPersonStatusResponse:
        request = pb.GetPersonStatusRequest(purpose=purpose, idcs=idcs)
        try:
            response: pb.GetPersonStatusResponse = self._stub.GetPersonStatus(
                request, timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from(exc) from None
        return response

    def household_status(self, purpose: str, who: str) -> pb.GetHouseholdStatusResponse:
        request = pb.GetHouseholdStatusRequest(purpose=purpose, subject=subject(who))
        try:
            response: pb.GetHouseholdStatusResponse = self._stub.GetHouseholdStatus(
                request, timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from(exc) from None
        return response

    def verify(
        self, purpose: str, who: str, programme: str, as_of: dt.date | None = None
    ) -> pb.EligibilityDecision:
        request = pb.VerifyEligibilityRequest(
            purpose=purpose, subject=subject(who), programme=programme, as_of=date(as_of)
        )
        try:
            response: pb.VerifyEligibilityResponse = self._stub.VerifyEligibility(
                request, timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from(exc) from None
        return response.decision

    def verify_batches(
        self,
        purpose: str,
        programme: str,
        batches: Iterable[Sequence[str]],
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> Iterator[pb.VerifyEligibilityBatchResponse]:
        """Stream batches of subjects; yields one response per batch, in order."""
        requests = (
            pb.VerifyEligibilityBatchRequest(
                purpose=purpose,
                programme=programme,
                as_of=date(as_of),
                subjects=[subject(s) for s in batch],
            )
            for batch in batches
        )
        try:
            yield from self._stub.VerifyEligibilityBatch(requests, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from(exc) from None
