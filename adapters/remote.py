"""Remote transport: an institution's records fetched from its MinistryBackend over gRPC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from adapters.base import MAX_KEYS_PER_FETCH, AdapterError, FetchContext, RecordMessage
from gateway import tracing
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1.backend_pb2 import RecordKind

BACKEND = backend_pb2.DESCRIPTOR.services_by_name["MinistryBackend"].full_name
_FIELD_OF_KIND = {
    RecordKind.RECORD_KIND_PERSON: ("person", "idcs"),
    RecordKind.RECORD_KIND_MEMBERSHIP: ("membership", "idcs"),
    RecordKind.RECORD_KIND_HOUSEHOLD: ("household", "household_id"),
    RecordKind.RECORD_KIND_COVERAGE: ("coverage", "idcs"),
    RecordKind.RECORD_KIND_ENROLMENT: ("enrolment", "household_id"),
}


class RemoteAdapter:
    """Calls one ministry backend; every call has a deadline and fails as AdapterError."""

    def __init__(
        self,
        institution: str,
        kinds: frozenset[RecordKind.ValueType],
        channel: grpc.Channel,
        default_timeout: float,
    ) -> None:
        self._institution = institution
        self._kinds = kinds
        self._channel = channel
        self._stub = backend_pb2_grpc.MinistryBackendStub(channel)
        self._default_timeout = default_timeout

    @property
    def institution(self) -> str:
        return self._institution

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]:
        return self._kinds

    def fetch(
        self, kind: RecordKind.ValueType, keys: Sequence[str], ctx: FetchContext
    ) -> Mapping[str, RecordMessage]:
        if kind not in self._kinds:
            raise AdapterError(self._institution, f"holds no {RecordKind.Name(kind)} records")
        if not keys:
            return {}
        timeout = self._default_timeout
        if ctx.timeout is not None:
            timeout = min(timeout, ctx.timeout)
        field, key_field = _FIELD_OF_KIND[kind]
        found: dict[str, RecordMessage] = {}
        for start in range(0, len(keys), MAX_KEYS_PER_FETCH):
            request = backend_pb2.FetchRecordsRequest(
                kind=kind, keys=keys[start : start + MAX_KEYS_PER_FETCH], purpose=ctx.purpose
            )
            try:
                with tracing.span(
                    f"{BACKEND}/FetchRecords",
                    kind=tracing.CLIENT,
                    attributes={
                        "rpc.system": "grpc",
                        "rpc.service": BACKEND,
                        "rpc.method": "FetchRecords",
                        "jisr.institution": self._institution,
                    },
                ):
                    response = self._stub.FetchRecords(
                        request, timeout=timeout, metadata=tracing.outgoing()
                    )
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                raise AdapterError(
                    self._institution,
                    f"backend answered {code.name}",
                    timed_out=code is grpc.StatusCode.DEADLINE_EXCEEDED,
                ) from exc
            for record in response.records:
                if record.WhichOneof("record") != field:
                    raise AdapterError(self._institution, "backend sent a record of another kind")
                message: RecordMessage = getattr(record, field)
                found[getattr(message, key_field)] = message
        return found

    def close(self) -> None:
        self._channel.close()
