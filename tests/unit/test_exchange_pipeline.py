"""The exchange pipeline over in-memory registries (a fake at the adapter boundary only;
the real adapters are exercised by tests/integration)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from adapters.base import (
    COVERAGE,
    DECISION,
    ENROLMENT,
    FULL,
    HOUSEHOLD,
    MEMBERSHIP,
    PERSON,
    SCORE,
    AdapterError,
    FetchContext,
    RecordMessage,
    View,
)
from gateway.base.errors import ExchangeError, Reason
from gateway.base.identifiers import make_idcs
from gateway.base.status import rich_status
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1.backend_pb2 import RecordKind
from gateway.pipeline import query
from gateway.pipeline.eligibility import UndecidableScoreError
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.programmes import load_default
from gateway.pipeline.registries import Registries, fetched_once
from gateway.services.edge import grpc_code

CTX = FetchContext(purpose="TEST")
UNKNOWN_IDCS = make_idcs("999999990")
DAY = dt.date(2025, 1, 1)


@dataclass
class MemoryAdapter:
    """Holds records by kind and key, and counts lookups."""

    institution: str
    records: dict[int, dict[str, RecordMessage]]
    calls: list[tuple[int, int]] = field(default_factory=list)
    views: list[tuple[int, View]] = field(default_factory=list)
    down: bool = False
    # Raised by every lookup when set: how the institution fails.
    fault: AdapterError | None = None
    # Whether records are cut to the view asked (as the embedded registry does) or
    # answered whole whatever the view (as a remote backend does).
    narrows: bool = True

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]:
        return frozenset(RecordKind.ValueType(k) for k in self.records)

    def fetch(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        view: View = FULL,
    ) -> Mapping[str, RecordMessage]:
        """Records as the view asks, no more: a decision that read a field its view
        leaves out would see it unset here, as from the embedded registry."""
        if self.down:
            raise AdapterError(self.institution, "down")
        if self.fault is not None:
            raise self.fault
        self.calls.append((kind, len(keys)))
        self.views.append((kind, view))
        table = self.records[kind]
        found = {k: table[k] for k in keys if k in table}
        narrow = self.narrows and view != FULL
        return {k: _shaped(r, view) for k, r in found.items()} if narrow else found

    def close(self) -> None:
        pass


def _shaped(record: RecordMessage, view: View) -> RecordMessage:
    """What the DECISION or SCORE view keeps of a record (adapters/base.py)."""
    if isinstance(record, rec.PersonRecord):
        return rec.PersonRecord(idcs=record.idcs, vital_status=record.vital_status)
    if isinstance(record, rec.HouseholdRecord):
        kept = rec.HouseholdRecord(household_id=record.household_id, score=record.score)
        for member in record.members if view == DECISION else ():
            kept.members.add(idcs=member.idcs)
        return kept
    if isinstance(record, rec.CoverageRecord):
        return rec.CoverageRecord(idcs=record.idcs, scheme=record.scheme)
    return record


def _world(households: int, narrows: bool = True) -> tuple[Exchange, MemoryAdapter, list[str]]:
    """`households` two-member households; odd ones have a salaried member (CNSS)."""
    people: dict[str, RecordMessage] = {}
    links: dict[str, RecordMessage] = {}
    homes: dict[str, RecordMessage] = {}
    cover: dict[str, RecordMessage] = {}
    members: list[str] = []
    for n in range(households):
        hid = f"H{n:09d}"
        home = rec.HouseholdRecord(household_id=hid, score=9.0 + (n % 3) * 0.3)
        for position in range(2):
            idcs = make_idcs(f"{n * 2 + position + 100_000_000:09d}")
            people[idcs] = rec.PersonRecord(idcs=idcs, vital_status=rec.VITAL_STATUS_ALIVE)
            links[idcs] = rec.MembershipRecord(idcs=idcs, household_id=hid)
            home.members.add(idcs=idcs)
            members.append(idcs)
            if n % 2 and position == 1:
                cover[idcs] = rec.CoverageRecord(idcs=idcs, scheme="AMO_SALARIES")
        homes[hid] = home
    adapter = MemoryAdapter(
        "ALL",
        {PERSON: people, MEMBERSHIP: links, HOUSEHOLD: homes, COVERAGE: cover, ENROLMENT: {}},
        narrows=narrows,
    )
    return Exchange(Registries([adapter]), load_default()), adapter, members


def _batch(subjects: list[str], programme: str = "AMOT") -> pb.EligibilityBatch:
    request = pb.EligibilityBatch(purpose="TEST", programme=programme)
    for s in subjects:
        request.subjects.add(**({"household_id": s} if s.startswith("H") else {"idcs": s}))
    request.as_of.year, request.as_of.month, request.as_of.day = 2025, 1, 1
    return request


def test_a_full_batch_costs_one_lookup_per_record_kind() -> None:
    exchange, adapter, members = _world(600)
    exchange.verify_batch(_batch(members[:1000]), 0, CTX)
    kinds = [kind for kind, _ in adapter.calls]
    assert sorted(kinds) == sorted([PERSON, MEMBERSHIP, HOUSEHOLD, COVERAGE])


def test_programme_without_coverage_condition_never_asks_cnss() -> None:
    exchange, adapter, members = _world(10)
    exchange.verify_batch(_batch(members, "ASD"), 0, CTX)
    assert COVERAGE not in [kind for kind, _ in adapter.calls]


def test_members_of_one_household_get_the_same_decision() -> None:
    exchange, _, members = _world(5)
    results = exchange.verify_batch(_batch(members), 0, CTX).results
    for first, second in zip(results[0::2], results[1::2], strict=True):
        assert first.decision == second.decision


def test_households_with_equal_answers_get_equal_results_each_its_own() -> None:
    exchange, _, _ = _world(7)  # 0 and 6: the same score, no member covered
    results = exchange.verify_batch(_batch(["H000000000", "H000000006"]), 0, CTX).results
    assert results[0].decision == results[1].decision
    results[0].decision.score_band = "changed"
    assert results[1].decision.score_band != "changed"


def test_a_member_with_other_coverage_excludes_the_household() -> None:
    exchange, _, _ = _world(2)
    covered = exchange.verify_batch(_batch(["H000000001"]), 0, CTX).results[0].decision
    assert list(covered.reasons) == [
        pb.REASON_CODE_SCORE_BELOW_THRESHOLD,
        pb.REASON_CODE_OTHER_AMO_COVERAGE,
    ]


def test_an_institution_down_fails_every_item_of_the_batch_as_unavailable() -> None:
    exchange, adapter, members = _world(3)
    adapter.down = True
    results = exchange.verify_batch(_batch([*members, "12"]), 0, CTX).results
    codes = [r.error.code for r in results]
    assert codes == [grpc.StatusCode.UNAVAILABLE.value[0]] * len(members) + [
        grpc.StatusCode.INVALID_ARGUMENT.value[0]
    ]


def test_unary_verify_raises_the_item_error() -> None:
    exchange, _, _ = _world(1)
    request = pb.VerifyEligibilityRequest(
        purpose="TEST", subject=pb.Subject(household_id="H000000099"), programme="ASD"
    )
    with pytest.raises(ExchangeError) as err:
        exchange.verify(exchange.eligibility_query(request), CTX)
    assert grpc_code(err.value.reason) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (AdapterError("ALL", "invalid household.score", invalid=True), Reason.BACKEND_INVALID),
        (AdapterError("ALL", "no time left", timed_out=True), Reason.BACKEND_TIMEOUT),
        (AdapterError("ALL", "backend answered UNAVAILABLE"), Reason.BACKEND_UNAVAILABLE),
    ],
    ids=["invalid", "timed-out", "down"],
)
def test_an_institutions_failure_is_unavailable_with_its_reason_and_name_never_a_decision(
    fault: AdapterError, reason: Reason
) -> None:
    exchange, adapter, members = _world(3)
    adapter.fault = fault
    results = exchange.verify_batch(_batch(members), 0, CTX).results
    assert all(r.HasField("error") for r in results)
    request = pb.VerifyEligibilityRequest(
        purpose="TEST", subject=pb.Subject(household_id="H000000000"), programme="ASD"
    )
    with pytest.raises(ExchangeError) as err:
        exchange.verify(exchange.eligibility_query(request), CTX)
    assert grpc_code(err.value.reason) == grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == reason
    assert err.value.metadata == {"institution": "ALL"}
    assert results[0].error == rich_status(err.value)


DECEASED_IDCS = make_idcs("900000001")
UNREGISTERED_IDCS = make_idcs("900000002")
# Subjects of _world(3) under AMOT: H0 scores 9.0 without other coverage, H2 scores 9.6.
DECISION_PATHS = {
    "eligible": ("H000000000", pb.REASON_CODE_SCORE_BELOW_THRESHOLD),
    "not-eligible": ("H000000002", pb.REASON_CODE_SCORE_ABOVE_THRESHOLD),
    "deceased": (DECEASED_IDCS, pb.REASON_CODE_SUBJECT_DECEASED),
    "not-in-rsu": (UNREGISTERED_IDCS, pb.REASON_CODE_NOT_REGISTERED_IN_RSU),
}


def _world_with_persons_outside_households() -> Exchange:
    exchange, adapter, _ = _world(3)
    people = adapter.records[PERSON]
    people[DECEASED_IDCS] = rec.PersonRecord(
        idcs=DECEASED_IDCS, vital_status=rec.VITAL_STATUS_DECEASED
    )
    people[UNREGISTERED_IDCS] = rec.PersonRecord(
        idcs=UNREGISTERED_IDCS, vital_status=rec.VITAL_STATUS_ALIVE
    )
    return exchange


@pytest.mark.parametrize("mode", ["unary", "batch"])
@pytest.mark.parametrize("path", list(DECISION_PATHS))
def test_every_decision_carries_the_threshold_version_and_legal_reference_in_force(
    path: str, mode: str
) -> None:
    """The README promises both on every decision, refusals for the subject's own state
    (deceased, outside the RSU) included."""
    exchange = _world_with_persons_outside_households()
    subject, first_reason = DECISION_PATHS[path]
    if mode == "unary":
        request = pb.VerifyEligibilityRequest(
            purpose="TEST", subject=_batch([subject]).subjects[0], programme="AMOT"
        )
        request.as_of.year, request.as_of.month, request.as_of.day = 2025, 1, 1
        decision = exchange.verify(exchange.eligibility_query(request), CTX).decision
    else:
        decision = exchange.verify_batch(_batch([subject]), 0, CTX).results[0].decision
    threshold = load_default().programmes["AMOT"].threshold_on(DAY)
    assert threshold is not None
    assert (decision.eligible, decision.reasons[0]) == (path == "eligible", first_reason)
    assert decision.threshold_version == threshold.version
    assert decision.legal_reference == threshold.legal_reference
    assert decision.legal_reference


@pytest.mark.parametrize("score", [-math.inf, math.nan])
def test_a_non_finite_score_from_an_unchecked_registry_is_never_decided(score: float) -> None:
    """Defence in depth: embedded records are not checked like remote ones, and the rule
    itself refuses to judge (a gateway fault, reported as INTERNAL by the service)."""
    exchange, adapter, _ = _world(1)
    household = adapter.records[HOUSEHOLD]["H000000000"]
    assert isinstance(household, rec.HouseholdRecord)
    household.score = score
    with pytest.raises(UndecidableScoreError):
        exchange.verify_batch(_batch(["H000000000"]), 0, CTX)


# -- one call, one lookup per record ----------------------------------------------------------


def test_a_record_fetched_twice_in_one_call_is_looked_up_once() -> None:
    """The consent check reads a person's membership, then the pipeline does: one lookup."""
    exchange, adapter, members = _world(1)
    with fetched_once():
        first = exchange.registries.memberships([members[0]], CTX)
        again = exchange.registries.memberships([members[0], members[1]], CTX)
    assert first[members[0]] == again[members[0]]
    assert set(again) == {members[0], members[1]}
    assert adapter.calls == [(MEMBERSHIP, 1), (MEMBERSHIP, 1)]


def test_a_record_not_found_is_remembered_as_not_found() -> None:
    exchange, adapter, _ = _world(1)
    with fetched_once():
        assert exchange.registries.memberships([UNKNOWN_IDCS], CTX) == {}
        assert exchange.registries.memberships([UNKNOWN_IDCS], CTX) == {}
    assert adapter.calls == [(MEMBERSHIP, 1)]


def test_an_eligibility_decision_reads_every_record_in_the_decision_view() -> None:
    exchange, adapter, members = _world(3)
    exchange.verify_batch(_batch([*members[:2], "H000000002"]), 0, CTX)
    assert adapter.views == [
        (PERSON, DECISION),
        (MEMBERSHIP, FULL),
        (HOUSEHOLD, DECISION),
        (COVERAGE, DECISION),
    ]


def test_a_programme_that_reads_no_coverage_reads_households_without_their_members() -> None:
    exchange, adapter, members = _world(3)
    exchange.verify_batch(_batch([*members[:2], "H000000002"], "ASD"), 0, CTX)
    assert adapter.views == [(PERSON, DECISION), (MEMBERSHIP, FULL), (HOUSEHOLD, SCORE)]


@pytest.mark.parametrize("programme", ["AMOT", "ASD"])
def test_decisions_from_narrow_views_equal_those_from_whole_records(programme: str) -> None:
    lean, _, members = _world(6)
    whole, _, _ = _world(6, narrows=False)
    subjects = [*members, *(f"H{n:09d}" for n in range(6))]
    answers = [x.verify_batch(_batch(subjects, programme), 0, CTX) for x in (lean, whole)]
    assert answers[0] == answers[1]
    assert all(r.HasField("decision") for r in answers[0].results)


def test_a_household_status_reads_whole_records() -> None:
    exchange, adapter, _ = _world(1)
    request = pb.GetHouseholdStatusRequest(
        purpose="TEST", subject=pb.Subject(household_id="H000000000")
    )
    exchange.household_status(query.household(request), CTX)
    assert {view for _, view in adapter.views} == {FULL}


def test_a_household_read_for_its_score_never_answers_a_decision_lookup() -> None:
    exchange, adapter, _ = _world(1)
    with fetched_once():
        exchange.registries.household_scores(["H000000000"], CTX, members=False)
        found = exchange.registries.household_scores(["H000000000"], CTX)
    assert adapter.views == [(HOUSEHOLD, SCORE), (HOUSEHOLD, DECISION)]
    assert len(found["H000000000"].members) == 2


def test_a_record_read_for_a_decision_never_answers_a_whole_record_lookup() -> None:
    exchange, adapter, members = _world(1)
    with fetched_once():
        exchange.registries.vital_statuses([members[0]], CTX)
        exchange.registries.persons([members[0]], CTX)
    assert adapter.views == [(PERSON, DECISION), (PERSON, FULL)]


def test_outside_a_call_every_lookup_reaches_the_registry() -> None:
    exchange, adapter, members = _world(1)
    exchange.registries.memberships([members[0]], CTX)
    exchange.registries.memberships([members[0]], CTX)
    assert adapter.calls == [(MEMBERSHIP, 1), (MEMBERSHIP, 1)]


# -- a request read once ----------------------------------------------------------------------


def test_an_eligibility_request_is_read_programme_first_then_date_then_subject() -> None:
    exchange, _, _ = _world(1)
    bad = pb.VerifyEligibilityRequest(
        purpose="TEST", subject=pb.Subject(idcs="12"), programme="NOPE"
    )
    with pytest.raises(ExchangeError) as err:
        exchange.eligibility_query(bad)
    assert err.value.reason == Reason.UNKNOWN_PROGRAMME
    bad.programme = "AMOT"
    with pytest.raises(ExchangeError) as err:
        exchange.eligibility_query(bad)
    assert (err.value.reason, err.value.metadata) == (
        Reason.INVALID_IDCS,
        {"field": "subject.idcs"},
    )


def test_a_household_query_keeps_the_subject_and_mask_it_was_read_with() -> None:
    request = pb.GetHouseholdStatusRequest(
        purpose="TEST", subject=pb.Subject(household_id="H000000001")
    )
    request.read_mask.paths.append("score_band")
    q = query.household(request)
    assert (q.subject, list(q.mask.paths)) == (("household_id", "H000000001"), ["score_band"])
