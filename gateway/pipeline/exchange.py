"""The exchange pipeline: validated request in, registry lookups, decision, response out.

Transport-free: the gRPC glue in service.py hands it parsed messages and a FetchContext and
turns ExchangeError into statuses. Bulk and unary eligibility share one batched path, so a
1,000-subject batch costs a handful of registry lookups, not thousands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import NamedTuple, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from adapters.base import AdapterError, FetchContext
from gateway.base.errors import ExchangeError, Reason, invalid, not_found
from gateway.base.status import rich_status
from gateway.base.wire import MAX_BATCH
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1.records_pb2 import HouseholdRecord, VitalStatus
from gateway.pipeline import due_process, validation
from gateway.pipeline.due_process import ProposedAction, Standing
from gateway.pipeline.eligibility import (
    DECEASED,
    NOT_IN_RSU,
    Decision,
    HouseholdFacts,
    decide,
    refuse,
)
from gateway.pipeline.programmes import Catalogue, Programme
from gateway.pipeline.query import EligibilityQuery, HouseholdQuery, Key, PersonQuery
from gateway.pipeline.registries import Registries

ALIVE = VitalStatus.VITAL_STATUS_ALIVE
DEAD = VitalStatus.VITAL_STATUS_DECEASED

Outcome = pb.EligibilityDecision | ExchangeError
Screen = Callable[[list[Key | ExchangeError]], list[Key | ExchangeError]]
# The actions holding households' benefits under a programme (the event store's
# `holding`): due process keeps a benefit in place while an action waits.
Holding = Callable[[Sequence[str], str], Mapping[tuple[str, str], ProposedAction]]
V = TypeVar("V")
M = TypeVar("M", bound=Message)


class _Pending(NamedTuple):
    """A subject resolved to its household, waiting for the household's facts (a tuple: a
    batch makes one per subject, and a tuple is cheaper to build than a frozen dataclass)."""

    at: int  # the subject's place in the request
    household_id: str


class Exchange:
    """Answers the RegistryExchange methods from the registries and the programme rules."""

    def __init__(
        self, registries: Registries, catalogue: Catalogue, holding: Holding | None = None
    ) -> None:
        self.registries = registries
        self.catalogue = catalogue
        self.holding = holding

    # -- persons and households -------------------------------------------------------

    def person_status(self, q: PersonQuery, ctx: FetchContext) -> pb.GetPersonStatusResponse:
        """Vital and civil status and household link of one person."""
        key, mask = q.idcs, q.mask
        person = fetch_or_unavailable(self.registries.persons, [key], ctx).get(key)
        if person is None:
            raise not_found("no person with this IDCS")
        status = pb.PersonStatus(
            idcs=person.idcs,
            vital_status=person.vital_status,
            civil_status=person.civil_status,
            birth_date=person.birth_date,
        )
        if person.vital_status == DEAD:
            status.death_date.CopyFrom(person.death_date)
        membership = fetch_or_unavailable(self.registries.memberships, [key], ctx).get(key)
        if membership is not None:
            status.household_id = membership.household_id
            status.relationship = membership.relationship
        return pb.GetPersonStatusResponse(person=_project(status, mask))

    def household_status(
        self, q: HouseholdQuery, ctx: FetchContext
    ) -> pb.GetHouseholdStatusResponse:
        """Composition and situation of one household, with its score band only."""
        (kind, key), mask = q.subject, q.mask
        if kind == "idcs":
            membership = fetch_or_unavailable(self.registries.memberships, [key], ctx).get(key)
            if membership is None:
                raise not_found("no RSU household for this subject")
            key = membership.household_id
        household = fetch_or_unavailable(self.registries.households, [key], ctx).get(key)
        if household is None:
            raise not_found("no RSU household for this subject")
        member_ids = [m.idcs for m in household.members]
        persons = fetch_or_unavailable(self.registries.persons, member_ids, ctx)
        enrolments = fetch_or_unavailable(self.registries.enrolments, [key], ctx).get(key)
        status = pb.HouseholdStatus(
            household_id=household.household_id,
            region=household.region,
            area=household.area,
            score_band=self.catalogue.bands.band(household.score),
            registered_on=household.registered_on,
            scored_on=household.scored_on,
            enrolments=enrolments.enrolments if enrolments is not None else [],
        )
        for member in household.members:
            line = status.members.add(idcs=member.idcs, relationship=member.relationship)
            person = persons.get(member.idcs)
            if person is not None:
                line.birth_date.CopyFrom(person.birth_date)
                line.vital_status = person.vital_status
        return pb.GetHouseholdStatusResponse(household=_project(status, mask))

    # -- eligibility ------------------------------------------------------------------

    def programme(self, code: str) -> Programme:
        """The programme named by a request, or INVALID_ARGUMENT."""
        programme = self.catalogue.programmes.get(code)
        if programme is None:
            raise invalid(Reason.UNKNOWN_PROGRAMME, "unknown programme code", "programme")
        return programme

    def eligibility_query(self, request: pb.VerifyEligibilityRequest) -> EligibilityQuery:
        """The query of a VerifyEligibility request: programme, date, then subject."""
        programme = self.programme(request.programme)
        as_of = validation.as_of(request.as_of, request.HasField("as_of"))
        return EligibilityQuery(validation.subject(request.subject), programme, as_of)

    def verify(self, q: EligibilityQuery, ctx: FetchContext) -> pb.VerifyEligibilityResponse:
        """One subject's eligibility; an unknown subject is an error status."""
        (outcome,) = self.decide_many(q.programme, [q.subject], q.as_of, ctx)
        if isinstance(outcome, ExchangeError):
            raise outcome
        return pb.VerifyEligibilityResponse(decision=outcome)

    def verify_batch(
        self,
        request: pb.EligibilityBatch,
        index: int,
        ctx: FetchContext,
        screen: Screen | None = None,
    ) -> pb.EligibilityBatchResults:
        """One batch: batch-level faults raise, each subject's fault is its own result.

        `screen` may refuse subjects before any is decided (consent), item by item."""
        if len(request.subjects) > MAX_BATCH:
            raise invalid(
                Reason.BATCH_TOO_LARGE, f"a batch holds at most {MAX_BATCH} subjects", "subjects"
            )
        programme = self.programme(request.programme)
        as_of = validation.as_of(request.as_of, request.HasField("as_of"))
        keys: list[tuple[str, str] | ExchangeError] = []
        for i, subject in enumerate(request.subjects):
            try:
                keys.append(validation.subject(subject, f"subjects[{i}]"))
            except ExchangeError as exc:
                keys.append(exc)
        if screen is not None:
            keys = screen(keys)
        response = pb.EligibilityBatchResults(batch_index=index)
        for outcome in self.decide_many(programme, keys, as_of, ctx):
            if isinstance(outcome, ExchangeError):
                response.results.add().error.CopyFrom(rich_status(outcome))
            else:
                response.results.add().decision.CopyFrom(outcome)
        return response

    def decide_many(
        self,
        programme: Programme,
        keys: Sequence[tuple[str, str] | ExchangeError],
        as_of: dt.date,
        ctx: FetchContext,
    ) -> list[Outcome]:
        """Decide every subject with one lookup per record kind for the whole list.

        Subjects with equal answers may share one message object (`_answer`): copy an
        outcome into a response, never change it in place."""
        outcomes: list[Outcome | None] = [k if isinstance(k, ExchangeError) else None for k in keys]
        try:
            pending = self._resolve(keys, outcomes, programme, as_of, ctx)
            self._judge(pending, outcomes, programme, as_of, ctx)
        except ExchangeError as exc:
            outcomes = [o if o is not None else exc for o in outcomes]
        return [o if o is not None else _lost() for o in outcomes]

    def _resolve(
        self,
        keys: Sequence[tuple[str, str] | ExchangeError],
        outcomes: list[Outcome | None],
        programme: Programme,
        as_of: dt.date,
        ctx: FetchContext,
    ) -> list[_Pending]:
        """Map each subject to its household; settle the deceased and unregistered."""
        people = [k[1] for k in keys if not isinstance(k, ExchangeError) and k[0] == "idcs"]
        vital = self.registries.vital_statuses
        persons = fetch_or_unavailable(vital, people, ctx) if people else {}
        alive = [i for i in people if i in persons and persons[i].vital_status != DEAD]
        links = fetch_or_unavailable(self.registries.memberships, alive, ctx) if alive else {}
        pending: list[_Pending] = []
        for index, key in enumerate(keys):
            if isinstance(key, ExchangeError):
                continue
            kind, value = key
            if kind == "household_id":
                pending.append(_Pending(index, value))
                continue
            person = persons.get(value)
            if person is None:
                outcomes[index] = not_found("no person with this IDCS")
            elif person.vital_status == DEAD:
                refusal = refuse(programme, DECEASED, as_of)
                outcomes[index] = self._decision(programme, refusal, as_of, "")
            elif value not in links:
                refusal = refuse(programme, NOT_IN_RSU, as_of)
                outcomes[index] = self._decision(programme, refusal, as_of, "")
            else:
                pending.append(_Pending(index, links[value].household_id))
        return pending

    def _judge(
        self,
        pending: Sequence[_Pending],
        outcomes: list[Outcome | None],
        programme: Programme,
        as_of: dt.date,
        ctx: FetchContext,
    ) -> None:
        """Fetch the households (and coverage when the programme needs it) and decide."""
        if not pending:
            return
        wanted = list(dict.fromkeys(p.household_id for p in pending))
        households = fetch_or_unavailable(
            partial(self.registries.household_scores, members=programme.reads_members),
            wanted,
            ctx,
        )
        schemes = self._coverage(households, ctx) if programme.needs_coverage else {}
        held = self._held(wanted, programme)
        answers: dict[str, pb.EligibilityDecision] = {}  # a household's members share it
        alike: dict[tuple[object, ...], pb.EligibilityDecision] = {}
        for item in pending:
            hid = item.household_id
            answer = answers.get(hid)
            if answer is None:
                household = households.get(hid)
                if household is None:
                    outcomes[item.at] = not_found("no RSU household for this subject")
                    continue
                facts = HouseholdFacts(household.score, schemes.get(hid, ()))
                action = held.get((hid, programme.code))
                answer = answers[hid] = self._answer(programme, facts, action, as_of, alike)
            outcomes[item.at] = answer

    def _answer(
        self,
        programme: Programme,
        facts: HouseholdFacts,
        action: ProposedAction | None,
        as_of: dt.date,
        alike: dict[tuple[object, ...], pb.EligibilityDecision],
    ) -> pb.EligibilityDecision:
        """One household's decision as answered. Without an action waiting, an answer
        names nothing of its household (programme, eligibility, reasons, band, payment,
        threshold, date), so equal answers of one call share a message (`alike`): a batch
        has a few dozen distinct answers for a thousand subjects. Callers copy outcomes
        into their responses and never change them."""
        band = self.catalogue.bands.band(facts.score)
        decision = decide(programme, facts, as_of)
        # Due process speaks only while the programme is in force on the date asked.
        standing = due_process.overlay(
            decision.eligible,
            tuple(decision.reasons),
            action if decision.threshold else None,
            programme.during_notice,
        )
        if standing.pending is not None:
            return self._decision(programme, decision, as_of, band, standing)
        key = (standing, band, decision.threshold)
        shared = alike.get(key)
        if shared is None:
            shared = alike[key] = self._decision(programme, decision, as_of, band, standing)
        return shared

    def _held(
        self, households: Sequence[str], programme: Programme
    ) -> Mapping[tuple[str, str], ProposedAction]:
        """The actions holding these households' benefits, for a programme that gives
        notice (no other has any). The event log out of reach is UNAVAILABLE: answering
        without it could stop a benefit the household was given notice of."""
        if self.holding is None or programme.notice_days <= 0:
            return {}
        try:
            return self.holding(households, programme.code)
        except Exception as exc:  # the store's own errors: never their text (it may quote rows)
            raise ExchangeError(
                Reason.EVENTS_UNAVAILABLE,
                "the event log could not be reached; retry later",
            ) from exc

    def _coverage(
        self, households: Mapping[str, HouseholdRecord], ctx: FetchContext
    ) -> dict[str, tuple[str, ...]]:
        """The AMO schemes held by each household's members."""
        ids = {hid: [m.idcs for m in h.members] for hid, h in households.items()}
        members = [idcs for each in ids.values() for idcs in each]
        found = (
            fetch_or_unavailable(self.registries.coverage_schemes, members, ctx) if members else {}
        )
        schemes = {idcs: record.scheme for idcs, record in found.items()}
        return {hid: tuple(schemes[i] for i in each if i in schemes) for hid, each in ids.items()}

    @staticmethod
    def _decision(
        programme: Programme,
        decision: Decision,
        as_of: dt.date,
        band: str,
        standing: Standing | None = None,
    ) -> pb.EligibilityDecision:
        """The decision as answered: the rules' own, or as due process keeps it (`standing`)."""
        threshold = decision.threshold
        if standing is None:
            standing = due_process.overlay(decision.eligible, tuple(decision.reasons), None, "")
        out = pb.EligibilityDecision(
            programme=programme.code,
            eligible=standing.eligible,
            reasons=standing.reasons,  # type: ignore[arg-type]
            score_band=band,
            payment=standing.payment,
        )
        if standing.pending is not None:
            action = standing.pending
            out.pending_action.action_id = action.action_id
            out.pending_action.contested = action.state == due_process.CONTESTED
            until = dt.datetime.fromtimestamp(action.notice_until_us / 1e6, tz=dt.UTC).date()
            day = out.pending_action.notice_until
            day.year, day.month, day.day = until.year, until.month, until.day
        out.as_of.year, out.as_of.month, out.as_of.day = as_of.year, as_of.month, as_of.day
        if threshold is not None:
            out.threshold_version = threshold.version
            out.legal_reference = threshold.legal_reference
        return out


def fetch_or_unavailable(
    fetch: Callable[[Sequence[str], FetchContext], Mapping[str, V]],
    keys: Sequence[str],
    ctx: FetchContext,
) -> Mapping[str, V]:
    """Run an adapter lookup, turning an institution's failure into UNAVAILABLE.

    An answer outside the contract is a failure too (BACKEND_INVALID), never a decision:
    nothing of it is used, and the message names the institution only."""
    try:
        return fetch(keys, ctx)
    except AdapterError as exc:
        if exc.invalid:
            reason, message = Reason.BACKEND_INVALID, "answered outside its contract"
        elif exc.timed_out:
            reason, message = Reason.BACKEND_TIMEOUT, "did not answer in time"
        else:
            reason, message = Reason.BACKEND_UNAVAILABLE, "did not answer"
        raise ExchangeError(
            reason,
            f"{exc.institution} {message}; retry later",
            {"institution": exc.institution},
            retry_after_s=exc.retry_after_s,
        ) from exc


def _project(status: M, mask: FieldMask) -> M:
    """Keep only the paths of `mask` (all of them when the mask is empty)."""
    if not mask.paths:
        return status
    projected = type(status)()
    mask.MergeMessage(status, projected)
    return projected


def _lost() -> ExchangeError:
    """A subject the pipeline forgot: a bug, reported as such rather than dropped."""
    return ExchangeError(Reason.INTERNAL, "subject was not decided")
