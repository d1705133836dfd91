"""Contesting an access: the citizen opens a case from an entry of their report, follows
it, and accepts the institution's answer, takes it to the CNDP, or withdraws it.

Every step is a ContestCases call (purpose CITIZEN_CONTEST) naming the signed-in citizen
as the subject, so the gateway checks the case is theirs and opened through this portal
(docs/contests.md). A text the gateway would refuse is named on the form and nothing is
sent; a case changed meanwhile (the DPO answered, the deadline passed) is shown again as
it now stands, with what the citizen typed kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.contests import cases as rules
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.portal import plain
from gateway.portal.sessions import CitizenSession
from gateway.portal.web import (
    ask,
    attempt,
    checked_form,
    current,
    error_page,
    refusal,
    render,
    to_login,
)
from gateway.sdk.client import JisrClient, JisrError
from gateway.sdk.contests import CITIZEN_PURPOSE, Contests
from gateway.sdk.trail import REPORT_PURPOSE, Trail

CASE_ID = re.compile(r"case-[0-9a-f]{16}")
RECORD_ID = re.compile(r"[A-Za-z0-9._-]{1,64}:[0-9]{1,19}")
STEPS = ("accept", "escalate", "withdraw")
MAX_TEXT = rules.MAX_TEXT  # the gateway's bound on a statement or a reason


def _contests(client: JisrClient) -> Contests:
    return Contests(client, CITIZEN_PURPOSE)


def text_problem(value: str) -> str:
    """The message key of what the gateway would refuse in a citizen's text once cleaned
    (`_clean`), or "": its own rule (gateway/contests/cases.py's check_text), so a French
    non-breaking space or an Arabic joiner passes, and a NUL or an escape does not."""
    text = _clean(value)
    if not text:
        return "contest.text_empty"
    if len(text) > MAX_TEXT:
        return "contest.text_long"
    try:
        rules.check_text(text)
    except rules.CaseError:
        return "contest.text_control"
    return ""


def _clean(value: str) -> str:
    """A text as sent: line ends as newlines, tabs as spaces, trimmed."""
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ").strip()


# -- opening a case ------------------------------------------------------------------------


async def _access(
    request: Request, session: CitizenSession, record_id: str
) -> plain.Access | Response:
    """The entry of the citizen's report with this record id (an audited report read)."""
    if not RECORD_ID.fullmatch(record_id):
        return error_page(request, session, 404, "error.not_found")

    def read(client: JisrClient) -> list[plain.Access]:
        return plain.report(Trail(client, REPORT_PURPOSE).report(session.subject).message.entries)

    accesses = await ask(request, session, read)
    if isinstance(accesses, Response):
        return accesses
    for access in accesses:
        if access.record_id == record_id:
            return access
    return error_page(request, session, 404, "error.not_found")


async def new_case(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()
    access = await _access(request, session, request.query_params.get("record", "")[:100])
    if isinstance(access, Response):
        return access
    return render(request, "contest.html", {"a": access, "statement": "", "error": ""}, session)


async def open_case(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()
    form = await checked_form(request, session)
    record_id = str(form.get("record") or "")[:100]
    statement = str(form.get("statement") or "")[: MAX_TEXT * 2]
    problem = text_problem(statement)
    if problem:
        access = await _access(request, session, record_id)
        if isinstance(access, Response):
            return access
        context = {"a": access, "statement": statement, "error": problem}
        return render(request, "contest.html", context, session, 400)
    if not RECORD_ID.fullmatch(record_id):
        return error_page(request, session, 404, "error.not_found")

    def send(client: JisrClient) -> kpb.ContestCase:
        answer = _contests(client).open(session.subject, record_id, _clean(statement))
        return answer.message.case

    case = await ask(request, session, send)
    if isinstance(case, Response):
        return case
    return RedirectResponse(f"/contests/case?id={case.case_id}&opened=1", status_code=303)


# -- following cases -----------------------------------------------------------------------


async def cases(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()

    def read(client: JisrClient) -> list[kpb.ContestCase]:
        return list(_contests(client).list(who=session.subject).message.cases)

    found = await ask(request, session, read)
    if isinstance(found, Response):
        return found
    found.sort(key=lambda c: c.opened.ToNanoseconds(), reverse=True)
    return render(request, "cases.html", {"cases": [plain.case(c) for c in found]}, session)


async def _case_page(
    request: Request,
    session: CitizenSession,
    case_id: str,
    extra: Mapping[str, Any],
    status: int = 200,
) -> Response:
    """The case as it now stands, with `extra` (a message, a text kept, a field named)."""
    if not CASE_ID.fullmatch(case_id):
        return error_page(request, session, 404, "error.not_found")

    def read(client: JisrClient) -> kpb.GetCaseResponse:
        return _contests(client).get(case_id, session.subject).message

    found = await ask(request, session, read)
    if isinstance(found, Response):
        return found
    context = {
        "case": plain.case(found.case),
        "history": [plain.step(e) for e in found.history],
        "notice": "",
        "reason_text": "",
        "error": "",
        **extra,
    }
    return render(request, "case.html", context, session, status)


async def case(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()
    notice = "contest.opened" if request.query_params.get("opened") == "1" else ""
    case_id = request.query_params.get("id", "")[:40]
    return await _case_page(request, session, case_id, {"notice": notice})


async def step(request: Request) -> Response:
    """Accept, escalate or withdraw (the path's last part), at the version the citizen
    read: a case changed meanwhile is shown again as it now stands."""
    session = current(request)
    if session is None:
        return to_login()
    action = request.path_params["action"]
    if action not in STEPS:
        return error_page(request, session, 404, "error.not_found")
    form = await checked_form(request, session)
    case_id = str(form.get("id") or "")[:40]
    version = str(form.get("version") or "")
    text = str(form.get("reason") or "")[: MAX_TEXT * 2]
    if not CASE_ID.fullmatch(case_id) or not version.isdigit() or len(version) > 19:
        return error_page(request, session, 404, "error.not_found")
    if action == "escalate" and (problem := text_problem(text)):
        extra = {"reason_text": text, "error": problem}
        return await _case_page(request, session, case_id, extra, 400)

    def send(client: JisrClient) -> None:
        contests = _contests(client)
        if action == "accept":
            contests.accept(case_id, int(version), session.subject)
        elif action == "escalate":
            contests.escalate(case_id, int(version), session.subject, _clean(text))
        else:
            contests.withdraw(case_id, int(version), session.subject)

    done = await attempt(request, session, send)
    if isinstance(done, JisrError):
        status, key = refusal(done)
        if status != 409:
            return error_page(request, session, status, key)
        extra = {"notice": key, "reason_text": text}
        return await _case_page(request, session, case_id, extra, 409)
    if isinstance(done, Response):
        return done
    return RedirectResponse(f"/contests/case?id={case_id}", status_code=303)
