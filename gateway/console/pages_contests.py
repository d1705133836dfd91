"""Contest cases: a DPO's queue and answer, the regulator's escalated cases and decision.

Every page and every step is one ContestCases call made as the officer (their
institution's credentials, their pseudonymous id as `sub`, purpose CONTEST_HANDLING), so
the gateway decides what the officer may see and do (docs/contests.md) and the trail
records each look and each step. A text the gateway would refuse is named under its field
and nothing is sent; a case another step changed meanwhile is shown again as it now
stands, with the officer's text kept. A case the officer may not see is "not found", the
same answer as for no case at all: a DPO learns nothing of another institution's cases.

Who sees which form is the gateway's rule read from the case: the answer form on an open
case of the officer's own institution, the decision form on an escalated case of another
institution (only the regulator can read those). The gateway checks again either way.

The console stands apart from the gateway's parts (tests/unit/test_import_rules.py): the
states, steps and text rule of gateway/contests/cases.py are restated here, and
tests/unit/test_console_contest_words.py holds them equal.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console.accounts import INSTITUTION
from gateway.console.link import GatewayLink
from gateway.console.web import (
    Officer,
    attempt,
    checked_form,
    refusal_page,
    render,
    signed_in,
)
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.sdk.client import JisrError
from gateway.sdk.contests import DISMISSED, UPHELD, Contests

T = TypeVar("T")

CASE_ID = re.compile(r"case-[0-9a-f]{16}")
# gateway/contests/cases.py's values, as the gateway sends them.
OPEN, ANSWERED, ESCALATED, CLOSED = "open", "answered", "escalated", "closed"
STATES = (OPEN, ANSWERED, ESCALATED, CLOSED)
MAX_TEXT = 2000  # characters of an answer or a decision's reasons, once trimmed
SHOWN = 200  # cases on one page of the list
# The list's state filter: "" is the gateway's default (a DPO: the cases still needing
# someone; the regulator: the escalated ones), "all" every state.
ALL = "all"
FILTERS = ("", *STATES, ALL)
OUTCOMES = (UPHELD, DISMISSED)

# The words of the gateway's values (built here so the catalogues' test sees each key).
STATE_WORDS = {
    OPEN: "contests.state.open",
    ANSWERED: "contests.state.answered",
    ESCALATED: "contests.state.escalated",
    CLOSED: "contests.state.closed",
}
OUTCOME_WORDS = {
    "accepted": "contests.outcome.accepted",
    "withdrawn": "contests.outcome.withdrawn",
    UPHELD: "contests.outcome.upheld",
    DISMISSED: "contests.outcome.dismissed",
}
ACTION_WORDS = {
    "open": "contests.action.open",
    "answer": "contests.action.answer",
    "accept": "contests.action.accept",
    "escalate": "contests.action.escalate",
    "escalate_overdue": "contests.action.escalate_overdue",
    "uphold": "contests.action.uphold",
    "dismiss": "contests.action.dismiss",
    "withdraw": "contests.action.withdraw",
}
ACTOR_WORDS = {
    "citizen": "contests.actor.citizen",
    "dpo": "contests.actor.dpo",
    "regulator": "contests.actor.regulator",
    "system": "contests.actor.system",
}


# -- talking to the gateway ----------------------------------------------------------------


async def ask_contests(
    request: Request, officer: Officer, work: Callable[[Contests], T]
) -> T | JisrError | Response:
    """`work` on ContestCases as the officer (web.attempt)."""
    return await attempt(request, officer, GatewayLink.contests, work)


def not_found(request: Request, officer: Officer) -> Response:
    context = {"status": 404, "key": "error.no_case", "reason": ""}
    return render(request, "error.html", context, officer=officer, status=404)


def refused_page(request: Request, officer: Officer, error: JisrError) -> Response:
    """A case the officer may not see is not found (the gateway answers CASE_NOT_YOURS
    for an unknown case too); anything else as any refusal."""
    if error.reason == "CASE_NOT_YOURS" or error.code.name == "NOT_FOUND":
        return not_found(request, officer)
    return refusal_page(request, officer, error)


# -- what pages show -----------------------------------------------------------------------


def _moment(message: Any, field: str) -> dt.datetime | None:
    if not message.HasField(field):
        return None
    moment: dt.datetime = getattr(message, field).ToDatetime(tzinfo=dt.UTC)
    return moment


def overdue(case: kpb.ContestCase, now: dt.datetime) -> bool:
    """Unanswered at its due time: open (the gateway escalates it at the next read) or
    escalated without an answer."""
    due = _moment(case, "answer_due")
    waiting = case.state in (OPEN, ESCALATED) and not case.answer
    return waiting and due is not None and now >= due


def case_view(case: kpb.ContestCase, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": case.case_id,
        "record_id": case.record_id,
        "institution": case.institution,
        "portal": case.portal,
        "state": case.state,
        "state_key": STATE_WORDS.get(case.state, ""),
        "opened": _moment(case, "opened"),
        "answer_due": _moment(case, "answer_due"),
        "appeal_due": _moment(case, "appeal_due"),
        "updated": _moment(case, "updated"),
        "overdue": overdue(case, now),
        "version": case.version,
        "statement": case.statement,
        "answer": case.answer,
        "decision": case.decision,
        "outcome": case.outcome,
        "outcome_key": OUTCOME_WORDS.get(case.outcome, ""),
    }


def event_view(event: kpb.CaseEvent) -> dict[str, Any]:
    return {
        "when": _moment(event, "time"),
        "actor_key": ACTOR_WORDS.get(event.actor_kind, ""),
        "actor_kind": event.actor_kind,
        "actor_institution": event.actor_institution,
        "actor_id": event.actor_id,
        "action": event.action,
        "action_key": ACTION_WORDS.get(event.action, ""),
        "from_key": STATE_WORDS.get(event.from_state, ""),
        "to_key": STATE_WORDS.get(event.to_state, ""),
        "text": event.text,
    }


def text_problem(text: str) -> str:
    """The message key of what the gateway would refuse in an answer or a decision's
    reasons, or "": gateway/contests/cases.py's check_text, which reads CRLF as a newline
    (browsers send it), trims, and allows no control character but the newline."""
    cleaned = text.replace("\r\n", "\n").strip()
    if not cleaned:
        return "contests.text_empty"
    if len(cleaned) > MAX_TEXT:
        return "contests.text_long"
    if any(c != "\n" and unicodedata.category(c) in ("Cc", "Cs") for c in cleaned):
        return "contests.text_control"
    return ""


# -- the list ------------------------------------------------------------------------------


async def contests(request: Request) -> Response:
    """The officer's cases: filters in the query (no personal data in them)."""
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    state = request.query_params.get("state", "")[:20]
    institution = request.query_params.get("institution", "")[:40].strip().upper()
    errors: dict[str, str] = {}
    if state not in FILTERS:
        errors["state"] = "contests.state_invalid"
    if institution and not INSTITUTION.fullmatch(institution):
        errors["institution"] = "contests.institution_invalid"
    context: dict[str, Any] = {
        "state": state,
        "institution": institution,
        "states": [(s, STATE_WORDS[s]) for s in STATES],
        "errors": errors,
        "rows": None,
        "shown": SHOWN,
    }
    if errors:
        return render(request, "contests.html", context, officer=who, status=400)
    states = STATES if state == ALL else (state,) if state else ()

    def run(desk: Contests) -> list[kpb.ContestCase]:
        found = desk.list(institution=institution, states=states, limit=SHOWN)
        return list(found.message.cases)

    found = await ask_contests(request, who, run)
    if isinstance(found, Response):
        return found
    if isinstance(found, JisrError):
        return _list_refused(request, who, found, context)
    now = dt.datetime.now(dt.UTC)
    context["rows"] = [case_view(c, now) for c in found]
    return render(request, "contests.html", context, officer=who)


def _list_refused(
    request: Request, officer: Officer, error: JisrError, context: dict[str, Any]
) -> Response:
    """A filter the gateway refused, named under its field: the regulator asking for
    other states than escalated without an institution, a DPO naming another institution."""
    if error.reason == "CASE_FILTER_INVALID":
        field = "institution" if error.metadata.get("field") == "institution" else "state"
        context["errors"] = {field: "contests.filter_refused"}
        return render(request, "contests.html", context, officer=officer, status=400)
    if error.reason == "CASE_NOT_YOURS" and context["institution"]:
        context["errors"] = {"institution": "contests.institution_not_yours"}
        return render(request, "contests.html", context, officer=officer, status=403)
    return refusal_page(request, officer, error)


# -- one case ------------------------------------------------------------------------------


async def case_page(
    request: Request,
    officer: Officer,
    case_id: str,
    *,
    status: int = 200,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The case as it now stands (one GetCase as the officer), with `extra`: a message,
    the officer's text kept, a field named."""
    if not CASE_ID.fullmatch(case_id):
        return not_found(request, officer)

    def run(desk: Contests) -> kpb.GetCaseResponse:
        return desk.get(case_id).message

    found = await ask_contests(request, officer, run)
    if isinstance(found, Response):
        return found
    if isinstance(found, JisrError):
        return refused_page(request, officer, found)
    now = dt.datetime.now(dt.UTC)
    case = case_view(found.case, now)
    own = found.case.institution == officer.account.institution
    due = case["answer_due"]
    context: dict[str, Any] = {
        "c": case,
        "history": [event_view(e) for e in found.history],
        "can_answer": own and found.case.state == OPEN and due is not None and now < due,
        "can_decide": not own and found.case.state == ESCALATED,
        "outcomes": [(o, OUTCOME_WORDS[o]) for o in OUTCOMES],
        "message": "",
        "kept": "",
        "outcome": "",
        "errors": {},
        # After a step's POST, switching languages returns to the case, not the step.
        "back": f"/contests/case?id={case_id}",
        **(extra or {}),
    }
    return render(request, "case.html", context, officer=officer, status=status)


async def case(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    return await case_page(request, who, request.query_params.get("id", "")[:40])


def _posted(form: FormData) -> tuple[str, int, str]:
    """The case id, the version the officer read (0 if unreadable: the gateway then
    answers that the case changed) and the text, bounded."""
    version = str(form.get("expected_version") or "")
    return (
        str(form.get("id") or "")[:40],
        int(version) if version.isdigit() and len(version) <= 19 else 0,
        str(form.get("text") or "")[: MAX_TEXT * 2],
    )


async def _step(
    request: Request,
    officer: Officer,
    case_id: str,
    kept: Mapping[str, str],
    send: Callable[[Contests], object],
) -> Response:
    """Send one step; back to the case page when done, or the case again as it now
    stands with why the step was refused and what the officer typed."""
    done = await ask_contests(request, officer, send)
    if isinstance(done, Response):
        return done
    if not isinstance(done, JisrError):
        return RedirectResponse(f"/contests/case?id={case_id}", status_code=303)
    extra: dict[str, Any] = dict(kept)
    if done.reason == "CONCURRENT_CHANGE":
        extra["message"] = "contests.changed"
        return await case_page(request, officer, case_id, status=409, extra=extra)
    if done.reason == "CASE_STATE":
        extra["message"] = "contests.state_refused"
        return await case_page(request, officer, case_id, status=409, extra=extra)
    if done.reason == "CASE_TEXT_INVALID":
        field = "outcome" if done.metadata.get("field") == "outcome" else "text"
        extra["errors"] = {field: "contests.text_refused"}
        return await case_page(request, officer, case_id, status=400, extra=extra)
    return refused_page(request, officer, done)


async def answer(request: Request) -> Response:
    """A DPO's answer to an open case of its institution."""
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    form = await checked_form(request, who)
    case_id, version, text = _posted(form)
    if not CASE_ID.fullmatch(case_id):
        return not_found(request, who)
    problem = text_problem(text)
    if problem:
        extra = {"kept": text, "errors": {"text": problem}}
        return await case_page(request, who, case_id, status=400, extra=extra)
    return await _step(
        request, who, case_id, {"kept": text}, lambda desk: desk.answer(case_id, version, text)
    )


async def decide(request: Request) -> Response:
    """The regulator's decision on an escalated case: upheld or dismissed, with reasons."""
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    form = await checked_form(request, who)
    case_id, version, text = _posted(form)
    outcome = str(form.get("outcome") or "")[:20]
    if not CASE_ID.fullmatch(case_id):
        return not_found(request, who)
    errors = {}
    if outcome not in OUTCOMES:
        errors["outcome"] = "contests.outcome_missing"
    if problem := text_problem(text):
        errors["text"] = problem
    kept = {"kept": text, "outcome": outcome if outcome in OUTCOMES else ""}
    if errors:
        extra = {**kept, "errors": errors}
        return await case_page(request, who, case_id, status=400, extra=extra)
    return await _step(
        request, who, case_id, kept, lambda desk: desk.decide(case_id, version, outcome, text)
    )
