"""The one interface every institution adapter satisfies, whatever its transport."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from gateway.pb.jisr.v1 import records_pb2
from gateway.pb.jisr.v1.backend_pb2 import RecordKind

RecordMessage: TypeAlias = (
    records_pb2.PersonRecord
    | records_pb2.MembershipRecord
    | records_pb2.HouseholdRecord
    | records_pb2.CoverageRecord
    | records_pb2.EnrolmentRecord
)

PERSON = RecordKind.RECORD_KIND_PERSON
MEMBERSHIP = RecordKind.RECORD_KIND_MEMBERSHIP
HOUSEHOLD = RecordKind.RECORD_KIND_HOUSEHOLD
COVERAGE = RecordKind.RECORD_KIND_COVERAGE
ENROLMENT = RecordKind.RECORD_KIND_ENROLMENT

# Keys per FetchRecords call: large enough for a 1,000-subject batch with its members.
MAX_KEYS_PER_FETCH = 5000


@dataclass(frozen=True, slots=True)
class FetchContext:
    """What an adapter may know about the exchange it serves (never the subject)."""

    purpose: str
    # Seconds left for the whole exchange; remote adapters use it as their deadline.
    timeout: float | None = None
    # The requesting institution (from its certificate), for backends that log it.
    requester: str = ""


class AdapterError(Exception):
    """The institution could not answer; the exchange fails with UNAVAILABLE."""

    def __init__(self, institution: str, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(f"{institution}: {detail}")
        self.institution = institution
        self.timed_out = timed_out


class Adapter(Protocol):
    """An institution's registry: fetches many records of one kind in one call."""

    @property
    def institution(self) -> str: ...

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]: ...

    def fetch(
        self, kind: RecordKind.ValueType, keys: Sequence[str], ctx: FetchContext
    ) -> Mapping[str, RecordMessage]:
        """Records found for `keys` (absent keys are simply missing from the result)."""
        ...

    def close(self) -> None: ...


# How an embedded adapter reads one kind: a connection and keys in, records by key out.
Reader: TypeAlias = Callable[[sqlite3.Connection, Sequence[str]], Mapping[str, RecordMessage]]
