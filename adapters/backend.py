"""A MinistryBackend that serves one or more institutions' records from a registry file,
and the change journal of those institutions (registry events, docs/events.md).

This is the reference implementation of the contract a ministry's own system implements;
`jisr backend serve` runs it so that a gateway can reach the institution remotely.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NoReturn, Protocol

import grpc
from opentelemetry import propagate, trace

from adapters.base import MAX_KEYS_PER_FETCH, AdapterError, FetchContext, RecordMessage
from adapters.embedded import EmbeddedAdapter
from adapters.journal_entries import to_entry
from adapters.registry_db import JournalRow
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc, records_pb2
from gateway.pb.jisr.v1.backend_pb2 import RecordKind

_tracer = trace.get_tracer("jisr")
_RECORD_FIELD: dict[type, str] = {
    records_pb2.PersonRecord: "person",
    records_pb2.MembershipRecord: "membership",
    records_pb2.HouseholdRecord: "household",
    records_pb2.CoverageRecord: "coverage",
    records_pb2.EnrolmentRecord: "enrolment",
}


def wrap(record: RecordMessage) -> backend_pb2.Record:
    """The oneof envelope for a record."""
    envelope = backend_pb2.Record()
    getattr(envelope, _RECORD_FIELD[type(record)]).CopyFrom(record)
    return envelope


# Entries per StreamJournal call at most, and per message of its stream.
MAX_JOURNAL_READ = 5_000
_PER_MESSAGE = 500


class Journal(Protocol):
    """A registry's change journal (adapters/registry_db.py's Registry)."""

    def journal_heads(self) -> dict[str, int]: ...

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]: ...


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


class MinistryBackendServicer(backend_pb2_grpc.MinistryBackendServicer):
    """Answers FetchRecords for the kinds its adapters hold; other kinds are UNIMPLEMENTED."""

    def __init__(
        self,
        adapters: list[EmbeddedAdapter],
        clients: frozenset[str] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._by_kind: Mapping[int, EmbeddedAdapter] = {
            kind: adapter for adapter in adapters for kind in adapter.kinds
        }
        # Certificate names allowed to call (the gateway's); None: no TLS (development).
        self._clients = clients
        # The journal, and the sources it serves of it: its institutions' own changes.
        self._journal = journal
        self._sources = frozenset(adapter.institution for adapter in adapters)

    def _check_caller(self, context: grpc.ServicerContext) -> None:
        if self._clients is not None:
            names = context.auth_context().get("x509_common_name") or [b""]
            if bytes(names[0]).decode() not in self._clients:
                _abort(context, grpc.StatusCode.PERMISSION_DENIED, "only the gateway may call")

    def JournalHeads(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.JournalHeadsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.JournalHeadsResponse:
        """The heads of the sources this backend serves (none without a journal)."""
        self._check_caller(context)
        heads = self._journal.journal_heads() if self._journal is not None else {}
        return backend_pb2.JournalHeadsResponse(
            heads={s: h for s, h in heads.items() if s in self._sources}
        )

    def StreamJournal(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.StreamJournalRequest, context: grpc.ServicerContext
    ) -> Iterator[backend_pb2.StreamJournalResponse]:
        """One source's entries after `after_seq`, in messages of at most 500."""
        self._check_caller(context)
        if request.source not in self._sources or self._journal is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "this backend keeps no journal for that source",
            )
        if not 1 <= request.limit <= MAX_JOURNAL_READ:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"limit must be 1 to {MAX_JOURNAL_READ}",
            )
        rows = self._journal.journal_after(request.source, request.after_seq, request.limit)
        for start in range(0, len(rows), _PER_MESSAGE):
            part = rows[start : start + _PER_MESSAGE]
            yield backend_pb2.StreamJournalResponse(entries=[to_entry(r) for r in part])

    def FetchRecords(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.FetchRecordsResponse:
        """Continues the gateway's trace: one server span per call."""
        caller = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with _tracer.start_as_current_span(
            "jisr.v1.MinistryBackend/FetchRecords",
            context=propagate.extract(caller),
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "jisr.v1.MinistryBackend",
                "rpc.method": "FetchRecords",
                "jisr.record_kind": RecordKind.Name(request.kind),
                "jisr.keys": len(request.keys),
            },
            record_exception=False,  # an abort's text is not the span's
            set_status_on_exception=False,
        ):
            return self._fetch(request, context)

    def _fetch(
        self, request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.FetchRecordsResponse:
        self._check_caller(context)
        adapter = self._by_kind.get(request.kind)
        if adapter is None:
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                f"this backend holds no {RecordKind.Name(request.kind)} records",
            )
        if len(request.keys) > MAX_KEYS_PER_FETCH:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_KEYS_PER_FETCH} keys per call",
            )
        try:
            found = adapter.fetch(
                request.kind, list(request.keys), FetchContext(purpose=request.purpose)
            )
        except AdapterError as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return backend_pb2.FetchRecordsResponse(records=[wrap(r) for r in found.values()])
