"""A remote institution's change journal, read from its MinistryBackend (registry events,
docs/events.md): the journal the gateway's ingester reads for a source whose institution
it reaches remotely.

Each read has a deadline and fails as AdapterError; each entry is checked against the
contract before the ingester sees it (adapters/journal_entries.py).
"""

from __future__ import annotations

import logging

import grpc

from adapters.base import AdapterError
from adapters.journal_entries import from_entry
from adapters.registry_db import JournalRow
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc

log = logging.getLogger("jisr.remote")
# Seconds a journal read may take: a page of entries, not a lookup on a caller's clock.
JOURNAL_TIMEOUT_S = 30.0
# Seconds the heads may take: a backend that does not answer them holds up the round.
HEADS_TIMEOUT_S = 5.0


class RemoteJournal:
    """The journal of the sources one backend serves (its institutions' own changes)."""

    def __init__(
        self, institution: str, channel: grpc.Channel, timeout: float = JOURNAL_TIMEOUT_S
    ) -> None:
        self.institution = institution
        self._stub = backend_pb2_grpc.MinistryBackendStub(channel)
        self._timeout = timeout
        self._said_unimplemented = False

    def journal_heads(self) -> dict[str, int]:
        """The backend's heads; none from a backend that does not implement journals (a
        ministry system older than registry events): it is not a fault, said once."""
        try:
            response: backend_pb2.JournalHeadsResponse = self._stub.JournalHeads(
                backend_pb2.JournalHeadsRequest(), timeout=min(self._timeout, HEADS_TIMEOUT_S)
            )
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                if not self._said_unimplemented:
                    self._said_unimplemented = True
                    log.info(
                        "backend keeps no change journal", extra={"institution": self.institution}
                    )
                return {}
            raise self._failed(exc) from exc
        return {str(s): int(h) for s, h in response.heads.items()}

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]:
        request = backend_pb2.StreamJournalRequest(source=source, after_seq=seq, limit=limit)
        rows: list[JournalRow] = []
        call = self._stub.StreamJournal(request, timeout=self._timeout)
        try:
            for message in call:
                rows += [from_entry(entry, source) for entry in message.entries]
                if len(rows) > limit:
                    raise AdapterError(
                        self.institution, f"sent more than the {limit} entries asked", invalid=True
                    )
        except grpc.RpcError as exc:
            raise self._failed(exc) from exc
        finally:
            call.cancel()  # nothing more is read from it, whether it ended or failed
        return rows

    def _failed(self, exc: grpc.RpcError) -> AdapterError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        return AdapterError(
            self.institution,
            f"journal read answered {code.name}",
            timed_out=code is grpc.StatusCode.DEADLINE_EXCEEDED,
        )
