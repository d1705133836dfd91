"""The base of test fakes of a ministry's MinistryBackend that answer records only.

A fake belongs at a boundary Jisr does not own (the ministry's own system): tests that
need a backend to answer in a crafted way subclass this and write `FetchRecords`. A
backend that keeps no change journal reports no source, as a ministry's system without
registry events would."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc


class RecordsOnlyBackend(backend_pb2_grpc.MinistryBackendServicer):
    """No journal: no heads, and no source to stream."""

    def JournalHeads(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.JournalHeadsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.JournalHeadsResponse:
        return backend_pb2.JournalHeadsResponse()

    def StreamJournal(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.StreamJournalRequest, context: grpc.ServicerContext
    ) -> Iterator[backend_pb2.StreamJournalResponse]:
        context.abort(grpc.StatusCode.NOT_FOUND, "this backend keeps no journal")
        raise AssertionError("unreachable: abort raises")
