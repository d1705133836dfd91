"""The registries as the exchange sees them: each record kind routed to its institution.

Whether an institution is embedded or remote is configuration; the exchange only asks
for records by kind, many keys at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from adapters.base import (
    COVERAGE,
    ENROLMENT,
    HOUSEHOLD,
    MEMBERSHIP,
    PERSON,
    Adapter,
    FetchContext,
)
from gateway.pb.jisr.v1.backend_pb2 import RecordKind
from gateway.pb.jisr.v1.records_pb2 import (
    CoverageRecord,
    EnrolmentRecord,
    HouseholdRecord,
    MembershipRecord,
    PersonRecord,
)


class MissingInstitutionError(ValueError):
    """No configured institution holds a record kind the exchange needs."""


class Registries:
    """Typed, batched lookups over the configured adapters."""

    def __init__(self, adapters: Sequence[Adapter]) -> None:
        self.adapters = list(adapters)
        by_kind: dict[int, Adapter] = {}
        for adapter in adapters:
            for kind in adapter.kinds:
                by_kind.setdefault(kind, adapter)
        missing = [
            RecordKind.Name(k)
            for k in (PERSON, MEMBERSHIP, HOUSEHOLD, COVERAGE, ENROLMENT)
            if k not in by_kind
        ]
        if missing:
            raise MissingInstitutionError(f"no institution configured for {', '.join(missing)}")
        self._by_kind = by_kind

    def institution_of(self, kind: RecordKind.ValueType) -> str:
        """Which institution answers for a kind (for errors and, later, tracing)."""
        return self._by_kind[kind].institution

    def persons(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, PersonRecord]:
        return cast(Mapping[str, PersonRecord], self._by_kind[PERSON].fetch(PERSON, keys, ctx))

    def memberships(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, MembershipRecord]:
        found = self._by_kind[MEMBERSHIP].fetch(MEMBERSHIP, keys, ctx)
        return cast(Mapping[str, MembershipRecord], found)

    def households(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, HouseholdRecord]:
        found = self._by_kind[HOUSEHOLD].fetch(HOUSEHOLD, keys, ctx)
        return cast(Mapping[str, HouseholdRecord], found)

    def coverage(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, CoverageRecord]:
        found = self._by_kind[COVERAGE].fetch(COVERAGE, keys, ctx)
        return cast(Mapping[str, CoverageRecord], found)

    def enrolments(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, EnrolmentRecord]:
        found = self._by_kind[ENROLMENT].fetch(ENROLMENT, keys, ctx)
        return cast(Mapping[str, EnrolmentRecord], found)

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()
