"""Remote transport: an institution's records fetched from its MinistryBackend over gRPC.

Each call gets what is left of the caller's deadline (less the gateway's answer margin,
adapters/base.py), and each answer is checked against the contract before it is used
(adapters/record_checks.py): the backend is another institution's system.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace

from adapters.base import FULL, MAX_KEYS_PER_FETCH, AdapterError, FetchContext, RecordMessage, View
from adapters.record_checks import RecordInvalid, records_by_key
from adapters.resilience import Bulkhead, CircuitBreaker
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1.backend_pb2 import RecordKind

BACKEND = backend_pb2.DESCRIPTOR.services_by_name["MinistryBackend"].full_name
log = logging.getLogger("jisr.remote")
DEFAULT_IN_FLIGHT = 3  # fetches to one backend at once (the gateway passes workers - 1)
# What counts toward opening a backend's circuit: it is down, overloaded or broken. An
# answer outside the contract does not (it comes at once and holds nothing).
_BACKEND_FAULTS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_tracer = trace.get_tracer("jisr")


class RemoteAdapter:
    """Calls one ministry backend; every call has a deadline and fails as AdapterError."""

    def __init__(
        self,
        institution: str,
        kinds: frozenset[RecordKind.ValueType],
        channel: grpc.Channel,
        default_timeout: float,
        *,
        breaker: CircuitBreaker | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> None:
        self._institution = institution
        self._kinds = kinds
        self._channel = channel
        self._stub = backend_pb2_grpc.MinistryBackendStub(channel)
        self._default_timeout = default_timeout
        self.breaker = breaker or CircuitBreaker()
        self.bulkhead = bulkhead or Bulkhead(DEFAULT_IN_FLIGHT)

    @property
    def institution(self) -> str:
        return self._institution

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]:
        return self._kinds

    def fetch(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        view: View = FULL,
    ) -> Mapping[str, RecordMessage]:
        """Whole records whatever the `view`: FetchRecords carries no field mask (yet), so
        the backend answers every field (docs/policy.md, "views")."""
        if kind not in self._kinds:
            raise AdapterError(self._institution, f"holds no {RecordKind.Name(kind)} records")
        if not keys:
            return {}
        found: dict[str, RecordMessage] = {}
        for start in range(0, len(keys), MAX_KEYS_PER_FETCH):
            part = keys[start : start + MAX_KEYS_PER_FETCH]
            response = self._call(kind, part, ctx)
            try:
                found.update(records_by_key(kind, response.records, frozenset(part)))
            except RecordInvalid as exc:
                # Field and problem only: the values are personal data.
                log.warning(
                    "backend answer outside the contract",
                    extra={
                        "institution": self._institution,
                        "record_kind": RecordKind.Name(kind),
                        "field": exc.where,
                        "problem": exc.problem,
                    },
                )
                raise AdapterError(self._institution, f"invalid {exc}", invalid=True) from exc
        return found

    def _call(
        self, kind: RecordKind.ValueType, keys: Sequence[str], ctx: FetchContext
    ) -> backend_pb2.FetchRecordsResponse:
        """One FetchRecords within the caller's remaining time (BACKEND_TIMEOUT at once if
        none is left), through the bulkhead and the breaker (adapters/resilience.py)."""
        timeout = self._default_timeout
        left = ctx.time_left()
        if left is not None:
            if left <= 0:
                raise AdapterError(
                    self._institution, "no time left before the caller's deadline", timed_out=True
                )
            timeout = min(timeout, left)
        if not self.bulkhead.enter(left):
            raise AdapterError(
                self._institution,
                f"{self.bulkhead.limit} fetches already in flight to it",
                retry_after_s=0.5,
            )
        try:
            left = ctx.time_left()  # the bulkhead's wait came out of the caller's time
            if left is not None:
                if left <= 0:
                    raise AdapterError(
                        self._institution, "no time left before the caller's deadline",
                        timed_out=True,
                    )  # fmt: skip
                timeout = min(timeout, left)
            wait = self.breaker.allow()
            if wait > 0:
                raise AdapterError(
                    self._institution, "circuit open after repeated failures", retry_after_s=wait
                )
            return self._fetch_records(kind, keys, ctx, timeout)
        finally:
            self.bulkhead.leave()

    def _fetch_records(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        timeout: float,
    ) -> backend_pb2.FetchRecordsResponse:
        """The call itself; its outcome is the breaker's to count (never left pending)."""
        try:
            request = backend_pb2.FetchRecordsRequest(kind=kind, keys=keys, purpose=ctx.purpose)
            with _tracer.start_as_current_span(  # the backend's server span continues it
                f"{BACKEND}/FetchRecords",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "rpc.system": "grpc",
                    "rpc.service": BACKEND,
                    "rpc.method": "FetchRecords",
                    "jisr.institution": self._institution,
                },
                record_exception=False,  # its text is the backend's, maybe quoting data
                set_status_on_exception=False,
            ):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                response: backend_pb2.FetchRecordsResponse = self._stub.FetchRecords(
                    request, timeout=timeout, metadata=tuple(carrier.items())
                )
        except BaseException as exc:
            if not isinstance(exc, grpc.RpcError):
                self.breaker.released()  # not the backend's doing: a trial ends, no more
                raise
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code is grpc.StatusCode.DEADLINE_EXCEEDED and timeout < self._default_timeout:
                self.breaker.released()  # the caller's deadline, cut short: says nothing
            elif code in _BACKEND_FAULTS:
                self.breaker.failed()
            else:
                self.breaker.succeeded()  # it answered: a refusal is not an outage
            raise AdapterError(
                self._institution,
                f"backend answered {code.name}",
                timed_out=code is grpc.StatusCode.DEADLINE_EXCEEDED,
            ) from exc
        self.breaker.succeeded()
        return response

    def reachable(self, timeout: float) -> str | None:
        """None if the backend says it serves (gRPC health, within `timeout`), else why not:
        what the gateway's readiness probe reports (docs/deployment.md, "Probes")."""
        check = health_pb2_grpc.HealthStub(self._channel).Check
        try:
            answer = check(health_pb2.HealthCheckRequest(service=BACKEND), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            return f"health check answered {code.name}"
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            return f"says {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
        return None

    def close(self) -> None:
        self._channel.close()
