"""Contest cases from a citizen portal's, a DPO's or the regulator's desk.

A portal opens a case on one access its citizen's report lists (`AccessEntry.record_id`),
then accepts, escalates or withdraws it for that citizen; the accessing institution's DPO
answers; the regulator decides (docs/contests.md). Every call is an exchange like any
other: signed, checked against the policy, recorded, answered with a receipt the client
verifies before returning. The actor is the caller's `sub` (an officer's pseudonymous id,
or the portal's reference for the citizen): open a client per actor with
`JisrClient.acting_as(sub)`.

Each step names the case's version it was read at; a stale one fails with ABORTED
CONCURRENT_CHANGE: read the case again (`get`) and decide anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import Message

from gateway.base.wire import CONTEST_CASES
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.sdk.client import Answer, JisrClient, subject

M = TypeVar("M", bound=Message)

# The purposes the shipped policy grants: portals for the first, DPOs and the regulator
# for the second.
CITIZEN_PURPOSE = "CITIZEN_CONTEST"
HANDLING_PURPOSE = "CONTEST_HANDLING"
# How the regulator closes a case.
UPHELD = "upheld"
DISMISSED = "dismissed"


class Contests:
    """The ContestCases service through one client (its institution's credentials).

    `who` is the citizen's IDCS or household id (portals only; the gateway hashes it)."""

    def __init__(self, client: JisrClient, purpose: str = HANDLING_PURPOSE) -> None:
        self.client = client
        self.purpose = purpose

    def open(self, who: str, record_id: str, statement: str) -> Answer[kpb.OpenCaseResponse]:
        """A portal contests the audit record `record_id` ("<node>:<seq>") about `who`."""
        request = kpb.OpenCaseRequest(
            purpose=self.purpose, subject=subject(who), record_id=record_id, statement=statement
        )
        return self._call("OpenCase", request, kpb.OpenCaseResponse)

    def list(
        self,
        *,
        who: str = "",
        institution: str = "",
        states: Sequence[str] = (),
        limit: int = 0,
    ) -> Answer[kpb.ListCasesResponse]:
        """A DPO's queue (its active cases unless `states`), the regulator's escalated
        cases (or one `institution`'s), or a portal's cases of `who`."""
        request = kpb.ListCasesRequest(
            purpose=self.purpose, institution=institution, states=list(states), limit=limit
        )
        if who:
            request.subject.CopyFrom(subject(who))
        return self._call("ListCases", request, kpb.ListCasesResponse)

    def get(self, case_id: str, who: str = "") -> Answer[kpb.GetCaseResponse]:
        """The case and its history (a portal names the citizen it is about)."""
        request = kpb.GetCaseRequest(purpose=self.purpose, case_id=case_id)
        if who:
            request.subject.CopyFrom(subject(who))
        return self._call("GetCase", request, kpb.GetCaseResponse)

    def answer(self, case_id: str, version: int, text: str) -> Answer[kpb.AnswerCaseResponse]:
        """The DPO answers an open case."""
        request = kpb.AnswerCaseRequest(
            purpose=self.purpose, case_id=case_id, expected_version=version, text=text
        )
        return self._call("AnswerCase", request, kpb.AnswerCaseResponse)

    def accept(self, case_id: str, version: int, who: str) -> Answer[kpb.AcceptCaseResponse]:
        """The citizen accepts the answer."""
        request = kpb.AcceptCaseRequest(
            purpose=self.purpose, case_id=case_id, expected_version=version, subject=subject(who)
        )
        return self._call("AcceptCase", request, kpb.AcceptCaseResponse)

    def escalate(
        self, case_id: str, version: int, who: str, text: str
    ) -> Answer[kpb.EscalateCaseResponse]:
        """The citizen takes the answered case to the regulator, saying why."""
        request = kpb.EscalateCaseRequest(
            purpose=self.purpose,
            case_id=case_id,
            expected_version=version,
            subject=subject(who),
            text=text,
        )
        return self._call("EscalateCase", request, kpb.EscalateCaseResponse)

    def withdraw(self, case_id: str, version: int, who: str) -> Answer[kpb.WithdrawCaseResponse]:
        """The citizen withdraws an open or answered case."""
        request = kpb.WithdrawCaseRequest(
            purpose=self.purpose, case_id=case_id, expected_version=version, subject=subject(who)
        )
        return self._call("WithdrawCase", request, kpb.WithdrawCaseResponse)

    def decide(
        self, case_id: str, version: int, outcome: str, text: str
    ) -> Answer[kpb.DecideCaseResponse]:
        """The regulator closes an escalated case: UPHELD or DISMISSED, with its reasons."""
        request = kpb.DecideCaseRequest(
            purpose=self.purpose,
            case_id=case_id,
            expected_version=version,
            outcome=outcome,
            text=text,
        )
        return self._call("DecideCase", request, kpb.DecideCaseResponse)

    def _call(self, name: str, request: Message, response_type: type[M]) -> Answer[M]:
        return self.client.call(name, request, response_type, self.purpose, CONTEST_CASES)
