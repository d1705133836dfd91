"""The one interface every institution adapter satisfies, whatever its transport."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

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


# Time kept back from the caller's deadline for what the gateway does after its lookups
# (decide, write the audit record, sign the receipt, answer): a tenth of the caller's
# budget, and at least 50 ms, so the caller hears the gateway's own BACKEND_TIMEOUT
# with a receipt instead of its library's bare DEADLINE_EXCEEDED.
ANSWER_MARGIN_FRACTION = 0.1
MIN_ANSWER_MARGIN_S = 0.05


@dataclass(frozen=True, slots=True)
class FetchContext:
    """What an adapter may know about the exchange it serves (never the subject).

    Built with the caller's remaining seconds (`timeout`), it turns them once into an
    absolute monotonic instant (`fetch_by`), so lookups made one after another share the
    caller's budget instead of each getting all of it."""

    purpose: str
    # Seconds the caller had left when the exchange started (None: no deadline).
    timeout: float | None = None
    # The requesting institution (from its certificate), for backends that log it.
    requester: str = ""
    # The caller's pseudonymous system or officer id (the request token's `sub`).
    requester_sub: str = ""
    # Monotonic instant by which every lookup must have ended: the caller's deadline less
    # the answer margin. Derived from `timeout`; None when the caller set no deadline.
    fetch_by: float | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timeout is not None:
            margin = max(MIN_ANSWER_MARGIN_S, self.timeout * ANSWER_MARGIN_FRACTION)
            object.__setattr__(self, "fetch_by", time.monotonic() + self.timeout - margin)

    def time_left(self) -> float | None:
        """Seconds a lookup starting now may take (<= 0: none); None without a deadline."""
        if self.fetch_by is None:
            return None
        return self.fetch_by - time.monotonic()


class AdapterError(Exception):
    """The institution could not answer; the exchange fails with UNAVAILABLE.

    `timed_out`: it did not answer in time (BACKEND_TIMEOUT). `invalid`: it answered
    outside the contract (BACKEND_INVALID). The message names the institution and at most
    a field, never a value: it may reach logs."""

    def __init__(
        self,
        institution: str,
        detail: str,
        *,
        timed_out: bool = False,
        invalid: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{institution}: {detail}")
        self.institution = institution
        self.timed_out = timed_out
        self.invalid = invalid
        self.retry_after_s = retry_after_s  # e.g. until its circuit half-opens


# What a lookup needs of each record (data minimisation, docs/policy.md, "views"):
# FULL, the whole record (a status answer discloses it); DECISION, only what an
# eligibility decision reads (a person's IDCS and vital status; a household's id, score
# and members' IDCS; a coverage's IDCS and scheme); SCORE, a household's id and score
# alone (a decision under a programme that reads no coverage needs no member). An adapter
# may answer more than a view asks, never less.
View: TypeAlias = Literal["full", "decision", "score"]
FULL: View = "full"
DECISION: View = "decision"
SCORE: View = "score"
# The views an adapter may answer a lookup in, narrowest first, when it reads some kinds
# narrower than whole: a SCORE lookup may get a DECISION record, which holds more.
ANSWERED_IN: Mapping[View, tuple[View, ...]] = {
    FULL: (),
    DECISION: (DECISION,),
    SCORE: (SCORE, DECISION),
}


class Adapter(Protocol):
    """An institution's registry: fetches many records of one kind in one call."""

    @property
    def institution(self) -> str: ...

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]: ...

    def fetch(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        view: View = FULL,
    ) -> Mapping[str, RecordMessage]:
        """Records found for `keys` (absent keys are simply missing from the result),
        with at least the fields `view` names."""
        ...

    def close(self) -> None: ...


# How an embedded adapter reads one kind: a connection and keys in, records by key out.
Reader: TypeAlias = Callable[[sqlite3.Connection, Sequence[str]], Mapping[str, RecordMessage]]
