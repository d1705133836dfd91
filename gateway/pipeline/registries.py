"""The registries as the exchange sees them: each record kind routed to its institution.

Whether an institution is embedded or remote is configuration; the exchange only asks
for records by kind, many keys at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import cast

from adapters.base import (
    COVERAGE,
    DECISION,
    ENROLMENT,
    FULL,
    HOUSEHOLD,
    MEMBERSHIP,
    PERSON,
    SCORE,
    Adapter,
    AdapterError,
    FetchContext,
    RecordMessage,
    View,
)
from adapters.remote import RemoteAdapter
from gateway.pb.jisr.v1.backend_pb2 import RecordKind
from gateway.pb.jisr.v1.records_pb2 import (
    CoverageRecord,
    EnrolmentRecord,
    HouseholdRecord,
    MembershipRecord,
    PersonRecord,
)
from gateway.pipeline import disclosure
from gateway.telemetry import setup as telemetry
from gateway.telemetry import tracing

# Records one call (or one batch) already fetched, by kind and view, then key; None: not
# found. A view's records are kept apart: a DECISION record would not serve a FULL lookup.
_fetched: ContextVar[dict[tuple[int, View], dict[str, RecordMessage | None]] | None] = ContextVar(
    "jisr_fetched", default=None
)


@contextmanager
def fetched_once() -> Iterator[None]:
    """Inside this block (one call, or one batch of a stream) a record is fetched at most
    once per view: a consent check's membership lookup and the pipeline's are one round
    trip, and both see the same answer."""
    token = _fetched.set({})
    try:
        yield
    finally:
        _fetched.reset(token)


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
        # Whether a lookup may wait on the network (a remote institution): such calls run
        # on worker threads, never on the event loop (gateway/services/door.py).
        self.remote = any(isinstance(a, RemoteAdapter) for a in adapters)

    def _fetch(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        view: View = FULL,
    ) -> Mapping[str, RecordMessage]:
        """The records of `keys`: those this call fetched already from memory, the rest in
        one lookup."""
        calls = _fetched.get()
        if calls is None:
            return self._lookup(kind, keys, ctx, view)
        memo = calls.setdefault((kind, view), {})
        missing = [key for key in keys if key not in memo] if memo else keys
        if not missing:
            known = ((key, memo[key]) for key in keys)
            return {key: record for key, record in known if record is not None}
        found = self._lookup(kind, missing, ctx, view)
        memo.update(dict.fromkeys(missing))  # not found, unless found just below
        memo.update(found)
        if len(missing) == len(keys):  # nothing of these was known: the lookup's answer
            return found
        known = ((key, memo[key]) for key in keys)
        return {key: record for key, record in known if record is not None}

    def _lookup(
        self, kind: RecordKind.ValueType, keys: Sequence[str], ctx: FetchContext, view: View
    ) -> Mapping[str, RecordMessage]:
        """One lookup, in a span, timed; the span names the institution and the count only."""
        adapter = self._by_kind[kind]
        attributes = {
            "jisr.institution": adapter.institution,
            "jisr.record_kind": RecordKind.Name(kind),
        }
        clock = telemetry.Clock.now()
        with tracing.span("jisr.adapter", {**attributes, "jisr.keys": len(keys)}):
            try:
                found = adapter.fetch(kind, keys, ctx, view)
            except AdapterError:
                telemetry.instruments().adapter_errors.add(1, attributes)
                raise
            finally:
                telemetry.instruments().adapter_latency.record(clock.seconds(), attributes)
        _note_households(kind, found)
        return found

    def persons(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, PersonRecord]:
        return cast(Mapping[str, PersonRecord], self._fetch(PERSON, keys, ctx))

    def memberships(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, MembershipRecord]:
        return cast(Mapping[str, MembershipRecord], self._fetch(MEMBERSHIP, keys, ctx))

    def households(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, HouseholdRecord]:
        return cast(Mapping[str, HouseholdRecord], self._fetch(HOUSEHOLD, keys, ctx))

    def vital_statuses(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, PersonRecord]:
        """Persons as a decision reads them: IDCS and vital status at least (DECISION)."""
        return cast(Mapping[str, PersonRecord], self._fetch(PERSON, keys, ctx, DECISION))

    def household_scores(
        self, keys: Sequence[str], ctx: FetchContext, *, members: bool = True
    ) -> Mapping[str, HouseholdRecord]:
        """Households as a decision reads them: id and score at least, and the members'
        IDCS when the decision reads their coverage (`members`)."""
        view = DECISION if members else SCORE
        return cast(Mapping[str, HouseholdRecord], self._fetch(HOUSEHOLD, keys, ctx, view))

    def coverage_schemes(
        self, keys: Sequence[str], ctx: FetchContext
    ) -> Mapping[str, CoverageRecord]:
        """Coverage as a decision reads it: the IDCS and scheme at least (DECISION)."""
        return cast(Mapping[str, CoverageRecord], self._fetch(COVERAGE, keys, ctx, DECISION))

    def enrolments(self, keys: Sequence[str], ctx: FetchContext) -> Mapping[str, EnrolmentRecord]:
        return cast(Mapping[str, EnrolmentRecord], self._fetch(ENROLMENT, keys, ctx))

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()


def _note_households(kind: RecordKind.ValueType, found: Mapping[str, RecordMessage]) -> None:
    """Tell the call's audit which households it read: a household's own record, or a
    member's link to one (an answer about a member discloses the household too)."""
    if kind == HOUSEHOLD:
        disclosure.note(disclosure.HOUSEHOLD, found.keys())
    elif kind == MEMBERSHIP:
        disclosure.note(
            disclosure.HOUSEHOLD, (cast(MembershipRecord, m).household_id for m in found.values())
        )
