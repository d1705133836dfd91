"""The ContestCases service: a citizen's portal and the DPOs move contest cases.

A portal (role citizen_portal) opens a case on one audit record about its citizen, and
accepts, escalates or withdraws it; the accessing institution's DPO (role dpo) answers;
the regulator decides. The rules are gateway/contests/cases.py's, pure; this module finds
who acts (the caller's institution and role, the request token's `sub` as the actor's
pseudonymous id), checks that a portal speaks for the case's subject, and keeps the
cases in the contest store. Every call passes through the engine's authentication,
policy, audit record and receipt like any exchange (docs/contests.md).

Subjects are hashed with the audit key before anything is compared or stored, as the
audit trail does: the contest store never holds an IDCS or a household id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from adapters.base import FetchContext
from gateway.audit.record import AuditRecord
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import AuditStore, Query
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.base.times import now_us, timestamp
from gateway.contests import cases
from gateway.contests.cases import Actor, Case, CaseError, CaseEvent
from gateway.contests.store import ContestStore
from gateway.engine.call import Engine, UnaryMethod
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.pipeline import validation
from gateway.pipeline.exchange import fetch_or_unavailable
from gateway.pipeline.registries import Registries
from gateway.security.policy import Policy
from gateway.services.binding import service_handler

SERVICE = kpb.DESCRIPTOR.services_by_name["ContestCases"].full_name
# The purposes of the shipped policy: a portal lodging and following a citizen's contest;
# a DPO or the regulator handling it (docs/contests.md, "Purposes").
CITIZEN_PURPOSE = "CITIZEN_CONTEST"
HANDLING_PURPOSE = "CONTEST_HANDLING"
MAX_LIST = 1000
DEFAULT_LIST = 100
SWEEP_BATCH = 500
# A DPO's queue, unless it names states: what still needs someone.
_ACTIVE = (cases.OPEN, cases.ANSWERED, cases.ESCALATED)

log = logging.getLogger("jisr.contests")


def case_message(case: Case) -> kpb.ContestCase:
    return kpb.ContestCase(
        case_id=case.case_id,
        record_id=case.record_id,
        subject_hash=case.subject_hash,
        institution=case.institution,
        portal=case.portal,
        state=case.state,
        opened=timestamp(case.opened_us),
        answer_due=timestamp(case.answer_due_us),
        appeal_due=timestamp(case.appeal_due_us),
        updated=timestamp(case.updated_us),
        version=case.version,
        statement=case.statement,
        answer=case.answer,
        decision=case.decision,
        outcome=case.outcome,
    )


def event_message(event: CaseEvent) -> kpb.CaseEvent:
    return kpb.CaseEvent(
        seq=event.seq,
        time=timestamp(event.at_us),
        actor_kind=event.actor_kind,
        actor_institution=event.actor_institution,
        actor_id=event.actor_id,
        action=event.action,
        from_state=event.from_state,
        to_state=event.to_state,
        text=event.text,
    )


def _not_yours(message: str = "no case of yours has this id") -> CaseError:
    """Unknown, or not the caller's to see: one answer, so a stranger learns nothing."""
    return CaseError(Reason.CASE_NOT_YOURS, message)


def _stale(expected: int, case: Case) -> ExchangeError:
    return ExchangeError(
        Reason.CONCURRENT_CHANGE,
        f"the case is at version {case.version}, not {expected}: read it again and retry",
    )


class ContestCasesService:
    """Contest cases behind the engine: who may see and move which case."""

    def __init__(
        self,
        store: ContestStore,
        recorder: AuditRecorder,
        audit_store: AuditStore,
        policy: Policy,
        registries: Registries | None = None,
        *,
        answer_days: float = cases.ANSWER_DAYS,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.audit_store = audit_store
        self.policy = policy
        self.registries = registries
        self.answer_days = answer_days
        self.clock = clock

    # -- who acts -----------------------------------------------------------------------

    def _actor(self, ctx: FetchContext, kind: str) -> Actor:
        """The caller as an actor of `kind`, if its institution holds that role."""
        role = {cases.CITIZEN: "citizen_portal", cases.DPO: "dpo", cases.REGULATOR: "regulator"}
        if not self.policy.has_role(ctx.requester, role[kind]):
            raise _not_yours(f"this step is for the {role[kind]} role, which you do not hold")
        try:
            return Actor(kind, ctx.requester, ctx.requester_sub)
        except ValueError:
            raise _not_yours("the caller cannot act on contest cases") from None

    def _reader(self, ctx: FetchContext) -> Actor:
        """Who reads: a portal under the citizen's purpose, else the regulator, a DPO or a
        portal, whichever role the caller's institution holds first."""
        portal = self.policy.has_role(ctx.requester, "citizen_portal")
        if portal and ctx.purpose == CITIZEN_PURPOSE:
            return self._actor(ctx, cases.CITIZEN)
        for kind, role in ((cases.REGULATOR, "regulator"), (cases.DPO, "dpo")):
            if self.policy.has_role(ctx.requester, role):
                return self._actor(ctx, kind)
        return self._actor(ctx, cases.CITIZEN)

    def _subject(self, request: Any) -> tuple[str, str]:
        if not request.HasField("subject"):
            raise invalid(Reason.MISSING_SUBJECT, "subject is required", "subject")
        return validation.subject(request.subject)

    def _hash(self, request: Any) -> str:
        kind, key = self._subject(request)
        return self.recorder.subject(kind, key)

    def _case(self, case_id: str, actor: Actor, subject_hash: str) -> Case:
        """The case, if `actor` may see it (a portal: for the subject it names)."""
        case = self.store.case(case_id) if 0 < len(case_id) <= 64 else None
        if case is None or not _sees(case, actor, subject_hash):
            raise _not_yours()
        return case

    # -- the sweep ----------------------------------------------------------------------

    def fresh(self, case: Case, now: int) -> Case:
        """The case, escalated first if it is OPEN and overdue (by the system)."""
        for _ in range(3):
            if case.state != cases.OPEN or now < case.answer_due_us:
                return case
            new, event = cases.escalate_overdue(case, cases.SWEEP, now)
            if self.store.apply(new, event, case.version):
                return new
            again = self.store.case(case.case_id)
            if again is None:
                return case
            case = again
        return case

    def sweep(self, now: int | None = None) -> int:
        """Escalate the OPEN cases past their due time; how many were moved."""
        at = self.clock() if now is None else now
        moved = 0
        for case in self.store.overdue(at, SWEEP_BATCH):
            if self.fresh(case, at).state == cases.ESCALATED:
                moved += 1
        return moved

    # -- the methods --------------------------------------------------------------------

    def open_case(self, request: kpb.OpenCaseRequest, ctx: FetchContext) -> kpb.OpenCaseResponse:
        actor = self._actor(ctx, cases.CITIZEN)
        kind, key = self._subject(request)
        cases.check_record_id(request.record_id)
        cases.check_text(request.statement, "statement")
        hashes = self._subject_hashes(kind, key, ctx)
        record = self._record(request.record_id)
        if (
            record is None
            or not set(hashes) & set(record.subjects)
            or not cases.INSTITUTION.fullmatch(record.requester)
        ):
            raise ExchangeError(
                Reason.CASE_RECORD_NOT_FOUND, "no audit record with this id is about this subject"
            )
        case, event = cases.open_case(
            request.record_id,
            subject_hash=hashes[0],
            institution=record.requester,
            portal=actor.institution,
            statement=request.statement,
            actor=actor,
            now_us=self.clock(),
            answer_days=self.answer_days,
        )
        self.store.create(case, event)
        return kpb.OpenCaseResponse(case=case_message(case))

    def _subject_hashes(self, kind: str, key: str, ctx: FetchContext) -> list[str]:
        """The subject's hash first, then its household's (a person's contest may be of an
        exchange about their household, as their access report shows it)."""
        hashes = [self.recorder.subject(kind, key)]
        if kind == "idcs" and self.registries is not None:
            link = fetch_or_unavailable(self.registries.memberships, [key], ctx).get(key)
            if link is not None:
                hashes.append(self.recorder.subject("household_id", link.household_id))
        return hashes

    def _record(self, record_id: str) -> AuditRecord | None:
        node, _, seq = record_id.rpartition(":")
        records, _ = self.audit_store.query(Query(record=(node, int(seq))), 1, "")
        return records[0] if records else None

    def list_cases(self, request: kpb.ListCasesRequest, ctx: FetchContext) -> kpb.ListCasesResponse:
        actor = self._reader(ctx)
        limit = request.limit or DEFAULT_LIST
        if not 1 <= limit <= MAX_LIST:
            raise invalid(Reason.INVALID_PAGE, f"limit is 1 to {MAX_LIST}", "limit")
        states = tuple(request.states)
        unknown = sorted(set(states) - set(cases.STATES))
        if unknown:
            raise invalid(
                Reason.CASE_FILTER_INVALID, f"states are {', '.join(cases.STATES)}", "states"
            )
        now = self.clock()
        found: Iterable[Case]
        if actor.kind == cases.CITIZEN:
            if request.institution:
                raise invalid(
                    Reason.CASE_FILTER_INVALID, "a portal names no institution", "institution"
                )
            found = self.store.cases_for_subject(self._hash(request), actor.institution)
        elif actor.kind == cases.DPO:
            if request.institution not in ("", actor.institution):
                raise _not_yours("a DPO sees its own institution's cases only")
            found = self.store.cases_for_institution(actor.institution, states or _ACTIVE, limit)
        elif request.institution:
            found = self.store.cases_for_institution(
                request.institution, states or cases.STATES, limit
            )
        else:
            if set(states) - {cases.ESCALATED}:
                raise invalid(
                    Reason.CASE_FILTER_INVALID,
                    "without an institution, the regulator lists escalated cases",
                    "states",
                )
            self.sweep(now)
            found = self.store.escalated(limit)
        wanted = set(states or (cases.STATES if actor.kind != cases.DPO else _ACTIVE))
        listed = [c for c in (self.fresh(c, now) for c in found) if c.state in wanted]
        return kpb.ListCasesResponse(cases=[case_message(c) for c in listed[:limit]])

    def get_case(self, request: kpb.GetCaseRequest, ctx: FetchContext) -> kpb.GetCaseResponse:
        actor = self._reader(ctx)
        subject_hash = self._hash(request) if actor.kind == cases.CITIZEN else ""
        case = self.fresh(self._case(request.case_id, actor, subject_hash), self.clock())
        return kpb.GetCaseResponse(
            case=case_message(case),
            history=[event_message(e) for e in self.store.history(case.case_id)],
        )

    def _move(
        self,
        request: Any,
        actor: Actor,
        step: Callable[[Case, int], tuple[Case, CaseEvent]],
    ) -> kpb.ContestCase:
        """One step: the case as the caller may see it, at the version it read, moved by
        `step` (which checks who and when) and stored only if nobody moved it meanwhile."""
        subject_hash = self._hash(request) if actor.kind == cases.CITIZEN else ""
        case = self._case(request.case_id, actor, subject_hash)
        if request.expected_version != case.version:
            raise _stale(request.expected_version, case)
        now = self.clock()
        case = self.fresh(case, now)
        new, event = step(case, now)
        if not self.store.apply(new, event, case.version):
            raise _stale(request.expected_version, self.store.case(case.case_id) or case)
        return case_message(new)

    def answer_case(
        self, request: kpb.AnswerCaseRequest, ctx: FetchContext
    ) -> kpb.AnswerCaseResponse:
        actor = self._actor(ctx, cases.DPO)
        moved = self._move(request, actor, lambda c, t: cases.answer(c, actor, request.text, t))
        return kpb.AnswerCaseResponse(case=moved)

    def accept_case(
        self, request: kpb.AcceptCaseRequest, ctx: FetchContext
    ) -> kpb.AcceptCaseResponse:
        actor = self._actor(ctx, cases.CITIZEN)
        moved = self._move(request, actor, lambda c, t: cases.accept(c, actor, t))
        return kpb.AcceptCaseResponse(case=moved)

    def escalate_case(
        self, request: kpb.EscalateCaseRequest, ctx: FetchContext
    ) -> kpb.EscalateCaseResponse:
        actor = self._actor(ctx, cases.CITIZEN)
        moved = self._move(request, actor, lambda c, t: cases.escalate(c, actor, request.text, t))
        return kpb.EscalateCaseResponse(case=moved)

    def withdraw_case(
        self, request: kpb.WithdrawCaseRequest, ctx: FetchContext
    ) -> kpb.WithdrawCaseResponse:
        actor = self._actor(ctx, cases.CITIZEN)
        moved = self._move(request, actor, lambda c, t: cases.withdraw(c, actor, t))
        return kpb.WithdrawCaseResponse(case=moved)

    def decide_case(
        self, request: kpb.DecideCaseRequest, ctx: FetchContext
    ) -> kpb.DecideCaseResponse:
        actor = self._actor(ctx, cases.REGULATOR)
        moved = self._move(
            request,
            actor,
            lambda c, t: cases.decide(c, actor, request.outcome, request.text, t),
        )
        return kpb.DecideCaseResponse(case=moved)

    def handler(self, engine: Engine) -> grpc.GenericRpcHandler:
        """ContestCases behind the engine's authentication, policy and audit."""

        def unary(request: Any, run: Callable[[Any, FetchContext], Any]) -> UnaryMethod[Any, Any]:
            return UnaryMethod(request, run, blocking=True)

        return service_handler(
            engine,
            SERVICE,
            {
                "OpenCase": unary(kpb.OpenCaseRequest, self.open_case),
                "ListCases": unary(kpb.ListCasesRequest, self.list_cases),
                "GetCase": unary(kpb.GetCaseRequest, self.get_case),
                "AnswerCase": unary(kpb.AnswerCaseRequest, self.answer_case),
                "AcceptCase": unary(kpb.AcceptCaseRequest, self.accept_case),
                "EscalateCase": unary(kpb.EscalateCaseRequest, self.escalate_case),
                "WithdrawCase": unary(kpb.WithdrawCaseRequest, self.withdraw_case),
                "DecideCase": unary(kpb.DecideCaseRequest, self.decide_case),
            },
        )


def _sees(case: Case, actor: Actor, subject_hash: str) -> bool:
    if actor.kind == cases.REGULATOR:
        return True
    if actor.kind == cases.DPO:
        return case.institution == actor.institution
    return case.portal == actor.institution and case.subject_hash == subject_hash


class Sweeper:
    """Escalates overdue cases every `seconds`, on a thread of its own, until closed."""

    def __init__(self, service: ContestCasesService, seconds: float) -> None:
        self._service = service
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jisr-contest-sweep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                moved = self._service.sweep()
            except Exception as exc:  # a store outage: the next round tries again
                # The type only: a database error's text can quote a row's values.
                log.error("contest sweep failed: %s", type(exc).__name__)
                continue
            if moved:
                log.info("contest sweep: %d overdue cases escalated", moved)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
