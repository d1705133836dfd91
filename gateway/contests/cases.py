"""A contest case's states, who may move it, and when.

Pure (no I/O): the stores (gateway/contests/store.py) keep what this module makes; the
gateway's services, the console and the portal decide with it.

    open ──answer (DPO)──▶ answered ──accept (citizen)──▶ closed: accepted
     │                        └──escalate (citizen, before appeal_due_us)──▶ escalated
     └──escalate_overdue (system, from answer_due_us on)──▶ escalated
    escalated ──uphold | dismiss (regulator)──▶ closed: upheld | dismissed
    open, answered ──withdraw (citizen)──▶ closed: withdrawn

Who may act (checked before the state, so a stranger learns nothing of a case):
- the citizen, only through the portal institution that opened the case (`Case.portal`).
  The Actor carries no subject: that the person at the portal is the case's subject is
  the caller's check (it finds cases by `subject_hash` and portal);
- the DPO of the accessing institution (`Case.institution`, the audit record's requester);
- the regulator (the CNDP: which institution holds the role is the policy's business);
- the system, for the sweep that escalates unanswered cases.

Every transition returns the case at version + 1 and the event for its history (whose
`seq` is that version). The store writes both at once, only if the stored version is still
the one read, so two officers answering at once cannot both succeed.

Deadlines are half-open: the DPO answers while now_us < answer_due_us and the case is
overdue from answer_due_us on; the citizen escalates while now_us < appeal_due_us. So an
answer and the sweep never both apply, whatever the sweep's timing.

Actors are named by pseudonyms (an officer id, a portal's reference), never by name, as in
the audit trail; subjects by the trail's keyed hash, never a raw IDCS.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from gateway.base.errors import ExchangeError, Reason

ANSWER_DAYS = 30
"""Days the DPO has to answer (ANSS decisions: answer within 30 days, DOMAIN.md); after
them the case goes to the CNDP without waiting for the citizen."""
APPEAL_DAYS = 15
"""Days after an answer during which the citizen may escalate it (ANSS decisions: appeal
within 15 days); after them the citizen can still accept or withdraw, no longer escalate."""
MAX_TEXT = 2000
"""Characters of a statement, answer or decision, after stripping: a letter, not a file."""

DAY_US = 86_400 * 1_000_000

# States.
OPEN = "open"
ANSWERED = "answered"
ESCALATED = "escalated"
CLOSED = "closed"
STATES = (OPEN, ANSWERED, ESCALATED, CLOSED)

# Actor kinds (the policy roles behind them: citizen_portal, dpo, regulator).
CITIZEN = "citizen"
DPO = "dpo"
REGULATOR = "regulator"
SYSTEM = "system"
ACTOR_KINDS = (CITIZEN, DPO, REGULATOR, SYSTEM)

# Actions, as the history names them.
OPEN_CASE = "open"
ANSWER = "answer"
ACCEPT = "accept"
ESCALATE = "escalate"
ESCALATE_OVERDUE = "escalate_overdue"
UPHOLD = "uphold"
DISMISS = "dismiss"
WITHDRAW = "withdraw"
ACTIONS = (OPEN_CASE, ANSWER, ACCEPT, ESCALATE, ESCALATE_OVERDUE, UPHOLD, DISMISS, WITHDRAW)

# How a closed case ended ("" until then).
ACCEPTED = "accepted"
WITHDRAWN = "withdrawn"
UPHELD = "upheld"
DISMISSED = "dismissed"
OUTCOMES = (ACCEPTED, WITHDRAWN, UPHELD, DISMISSED)
_DECISIONS = {UPHELD: UPHOLD, DISMISSED: DISMISS}

CASE_PREFIX = "case-"
INSTITUTION = re.compile(r"[A-Z0-9_]{2,32}")  # as gateway/console/accounts.py
PSEUDONYM = re.compile(r"[!-~]{1,128}")  # printable ASCII, no space
SUBJECT_HASH = re.compile(r"[0-9a-f]{64}")  # gateway/audit/record.py's subject_hash
RECORD_ID = re.compile(r"([!-~]{1,180}):([1-9][0-9]{0,18})")  # "<node>:<seq>"


class CaseError(ExchangeError):
    """A transition refused: `reason` is CASE_NOT_YOURS, CASE_STATE, CASE_TEXT_INVALID or
    INVALID_RECORD_ID, so the gRPC edge reports it like any other refusal."""


class DuplicateCaseError(ValueError):
    """A new case's id is stored already (two creates of one case)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on a case: a kind, its institution ("" for the system only) and a
    pseudonymous id (an officer id, the portal's reference of the citizen); never a name.
    Built by the gateway from an authenticated call, so a malformed one is a ValueError."""

    kind: str
    institution: str
    id: str

    def __post_init__(self) -> None:
        if self.kind not in ACTOR_KINDS:
            raise ValueError(f"actor kind {self.kind!r} is not one of {ACTOR_KINDS}")
        if not (self.kind == SYSTEM and self.institution == "") and not INSTITUTION.fullmatch(
            self.institution
        ):
            raise ValueError(f"actor institution {self.institution!r} is not an institution id")
        if not PSEUDONYM.fullmatch(self.id):
            raise ValueError("actor id is not 1 to 128 printable ASCII characters")


SWEEP = Actor(SYSTEM, "", "escalation-sweep")
"""The actor of the sweep that escalates overdue cases."""


@dataclass(frozen=True, slots=True)
class Case:
    """One contest of one audit record, as stored (see the module docstring)."""

    case_id: str  # "case-" + 16 hex, random
    record_id: str  # "<node>:<seq>" of the contested audit record
    subject_hash: str  # the citizen's subject as the audit trail hashes it
    institution: str  # the accessing institution (the record's requester): its DPO answers
    portal: str  # the portal institution through which the citizen opened it
    state: str
    opened_us: int
    answer_due_us: int
    appeal_due_us: int | None  # set by the answer
    updated_us: int  # time of the latest transition (of the escalation, while escalated)
    version: int  # 1 when opened, + 1 per transition: the history's latest seq
    statement: str  # the citizen's, when opening
    answer: str  # the DPO's latest, "" before
    decision: str  # the regulator's, "" before
    outcome: str  # one of OUTCOMES once closed, else ""


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One step of a case's history (append-only): who did what, from which state to which."""

    case_id: str
    seq: int  # the case's version after this step
    at_us: int
    actor_kind: str
    actor_institution: str
    actor_id: str
    action: str
    from_state: str  # "" for the opening
    to_state: str
    text: str  # the statement, answer, escalation reason or decision; "" for none


@dataclass(frozen=True, slots=True)
class Step:
    """A step of the history with what a reader across cases needs of its case."""

    institution: str
    opened_us: int
    subject_hash: str
    event: CaseEvent


def check_text(text: str, field: str = "text") -> str:
    """The text as kept: stripped, CRLF read as a newline (browsers send it), and 1 to
    MAX_TEXT characters with no control character but the newline (no NUL, escape or
    unpaired surrogate reaches a page or a database); CaseError CASE_TEXT_INVALID naming
    `field` otherwise."""
    cleaned = text.replace("\r\n", "\n").strip()
    if not 1 <= len(cleaned) <= MAX_TEXT:
        raise _text_error(f"{field} must have 1 to {MAX_TEXT} characters", field)
    if any(c != "\n" and unicodedata.category(c) in ("Cc", "Cs") for c in cleaned):
        raise _text_error(f"{field} holds a control character", field)
    return cleaned


def check_record_id(record_id: str) -> None:
    """CaseError INVALID_RECORD_ID unless `record_id` is "<node>:<seq>" (seq from 1)."""
    found = RECORD_ID.fullmatch(record_id)
    if found is None or int(found[2]) >= 2**63:
        raise CaseError(
            Reason.INVALID_RECORD_ID, "record_id is <node>:<seq>", {"field": "record_id"}
        )


def open_case(
    record_id: str,
    *,
    subject_hash: str,
    institution: str,
    portal: str,
    statement: str,
    actor: Actor,
    now_us: int,
    answer_days: float = ANSWER_DAYS,
) -> tuple[Case, CaseEvent]:
    """A new case, OPEN, due `answer_days` (ANSWER_DAYS unless the gateway is configured
    otherwise) from now, opened by a citizen through `portal`.
    Keyword arguments: four strings in a row are too easy to swap (institution, portal).

    `subject_hash` and `institution` come from the audit record (the gateway has checked
    that the record is about this citizen), so a malformed one is a ValueError."""
    if actor.kind != CITIZEN or actor.institution != portal:
        raise CaseError(Reason.CASE_NOT_YOURS, "only a citizen, through its portal, opens a case")
    check_record_id(record_id)
    if not SUBJECT_HASH.fullmatch(subject_hash):
        raise ValueError("subject_hash is not a hex SHA-256 (never a raw IDCS)")
    if not INSTITUTION.fullmatch(institution) or not INSTITUTION.fullmatch(portal):
        raise ValueError(f"{institution!r} or {portal!r} is not an institution id")
    if not answer_days > 0:
        raise ValueError(f"answer_days must be positive, not {answer_days}")
    text = check_text(statement, "statement")
    case = Case(
        case_id=CASE_PREFIX + secrets.token_hex(8),
        record_id=record_id,
        subject_hash=subject_hash,
        institution=institution,
        portal=portal,
        state=OPEN,
        opened_us=now_us,
        answer_due_us=now_us + max(1, round(answer_days * DAY_US)),
        appeal_due_us=None,
        updated_us=now_us,
        version=1,
        statement=text,
        answer="",
        decision="",
        outcome="",
    )
    return case, _event(case, actor, OPEN_CASE, "", text=text, now_us=now_us)


def overdue(case: Case, now_us: int) -> bool:
    """Whether the case waits for an answer past its due time (the sweep escalates it)."""
    return case.state == OPEN and now_us >= case.answer_due_us


def allowed_actions(case: Case, actor: Actor, now_us: int) -> tuple[str, ...]:
    """The actions `actor` may take on the case at `now_us` (for the buttons of a page)."""
    return tuple(
        a
        for a in ACTIONS[1:]
        if _may_act(case, actor, a) and _state_refusal(case, a, now_us) is None
    )


def answer(case: Case, actor: Actor, text: str, now_us: int) -> tuple[Case, CaseEvent]:
    """The institution's DPO answers an OPEN case before it is due."""
    _check(case, actor, ANSWER, now_us)
    cleaned = check_text(text)
    due = now_us + APPEAL_DAYS * DAY_US
    return _step(
        case,
        actor,
        ANSWER,
        ANSWERED,
        text=cleaned,
        now_us=now_us,
        answer=cleaned,
        appeal_due_us=due,
    )


def accept(case: Case, actor: Actor, now_us: int) -> tuple[Case, CaseEvent]:
    """The citizen accepts the answer: the case is closed."""
    _check(case, actor, ACCEPT, now_us)
    return _step(case, actor, ACCEPT, CLOSED, text="", now_us=now_us, outcome=ACCEPTED)


def escalate(case: Case, actor: Actor, text: str, now_us: int) -> tuple[Case, CaseEvent]:
    """The citizen, not satisfied with the answer, takes the case to the regulator within
    APPEAL_DAYS of it, saying why (`text`)."""
    _check(case, actor, ESCALATE, now_us)
    return _step(case, actor, ESCALATE, ESCALATED, text=check_text(text), now_us=now_us)


def escalate_overdue(case: Case, actor: Actor, now_us: int) -> tuple[Case, CaseEvent]:
    """The system takes an unanswered case to the regulator once it is overdue."""
    _check(case, actor, ESCALATE_OVERDUE, now_us)
    return _step(case, actor, ESCALATE_OVERDUE, ESCALATED, text="", now_us=now_us)


def decide(
    case: Case, actor: Actor, outcome: str, text: str, now_us: int
) -> tuple[Case, CaseEvent]:
    """The regulator closes an escalated case: `outcome` "upheld" (the citizen was right)
    or "dismissed", with its reasons (`text`)."""
    action = _DECISIONS.get(outcome, UPHOLD)  # who and when: the same for both outcomes
    _check(case, actor, action, now_us)
    if outcome not in _DECISIONS:
        raise _text_error(f"outcome must be one of {sorted(_DECISIONS)}", "outcome")
    cleaned = check_text(text, "decision")
    return _step(
        case, actor, action, CLOSED, text=cleaned, now_us=now_us, decision=cleaned, outcome=outcome
    )


def withdraw(case: Case, actor: Actor, now_us: int) -> tuple[Case, CaseEvent]:
    """The citizen withdraws an OPEN or ANSWERED case (not one the regulator holds)."""
    _check(case, actor, WITHDRAW, now_us)
    return _step(case, actor, WITHDRAW, CLOSED, text="", now_us=now_us, outcome=WITHDRAWN)


def _may_act(case: Case, actor: Actor, action: str) -> bool:
    if action in (ACCEPT, ESCALATE, WITHDRAW):
        return actor.kind == CITIZEN and actor.institution == case.portal
    if action == ANSWER:
        return actor.kind == DPO and actor.institution == case.institution
    if action in (UPHOLD, DISMISS):
        return actor.kind == REGULATOR
    return action == ESCALATE_OVERDUE and actor.kind == SYSTEM


def _state_refusal(case: Case, action: str, now_us: int) -> str | None:
    """Why the case's state does not allow `action` at `now_us`; None if it does."""
    allowed = {
        ANSWER: (OPEN,),
        ACCEPT: (ANSWERED,),
        ESCALATE: (ANSWERED,),
        ESCALATE_OVERDUE: (OPEN,),
        UPHOLD: (ESCALATED,),
        DISMISS: (ESCALATED,),
        WITHDRAW: (OPEN, ANSWERED),
    }[action]
    if case.state not in allowed:
        return f"case {case.case_id} is {case.state}: no {action} now"
    if action == ANSWER and now_us >= case.answer_due_us:
        return f"case {case.case_id} was due {case.answer_due_us}: it goes to the regulator"
    if action == ESCALATE_OVERDUE and now_us < case.answer_due_us:
        return f"case {case.case_id} is not due before {case.answer_due_us}"
    if action == ESCALATE and now_us >= (case.appeal_due_us or 0):
        return f"case {case.case_id}: the appeal window closed at {case.appeal_due_us}"
    return None


def _check(case: Case, actor: Actor, action: str, now_us: int) -> None:
    if not _may_act(case, actor, action):
        raise CaseError(Reason.CASE_NOT_YOURS, f"this case is not yours to {action}")
    why = _state_refusal(case, action, now_us)
    if why is not None:
        raise CaseError(Reason.CASE_STATE, why)


def _step(
    case: Case,
    actor: Actor,
    action: str,
    to_state: str,
    *,
    text: str,
    now_us: int,
    **changes: Any,
) -> tuple[Case, CaseEvent]:
    new = replace(case, state=to_state, version=case.version + 1, updated_us=now_us, **changes)
    return new, _event(new, actor, action, case.state, text=text, now_us=now_us)


def _event(
    case: Case, actor: Actor, action: str, from_state: str, *, text: str, now_us: int
) -> CaseEvent:
    return CaseEvent(
        case_id=case.case_id,
        seq=case.version,
        at_us=now_us,
        actor_kind=actor.kind,
        actor_institution=actor.institution,
        actor_id=actor.id,
        action=action,
        from_state=from_state,
        to_state=case.state,
        text=text,
    )


def _text_error(message: str, field: str) -> CaseError:
    return CaseError(Reason.CASE_TEXT_INVALID, message, {"field": field})
