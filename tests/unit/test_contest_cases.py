"""The contest case state machine: every step allowed, every step refused with its reason,
deadlines at their boundary, the text rules, and the history each step leaves."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from gateway.base.errors import ExchangeError, Reason
from gateway.base.status import code_name
from gateway.contests import cases
from gateway.contests.cases import (
    ACCEPTED,
    ANSWERED,
    APPEAL_DAYS,
    CLOSED,
    DAY_US,
    ESCALATED,
    OPEN,
    SWEEP,
    Actor,
    Case,
    CaseError,
    CaseEvent,
)

T0 = 1_750_000_000_000_000
DUE = T0 + 30 * DAY_US
SUBJECT = "ab" * 32
CITIZEN = Actor("citizen", "PORTAL_CNIE", "ref-7f3a")
OTHER_PORTAL = Actor("citizen", "PORTAL_MOBILE", "ref-7f3a")
DPO = Actor("dpo", "CNSS", "officer-1a2b3c4d5e6f7a8b")
OTHER_DPO = Actor("dpo", "ANSS", "officer-0000000000000000")
REGULATOR = Actor("regulator", "CNDP", "officer-cndp000000000001")

Step = Callable[[Case, Actor, int], tuple[Case, CaseEvent]]


def opened(at_us: int = T0, statement: str = "Why did CNSS read my household?") -> Case:
    return cases.open_case(
        "node-a:42",
        subject_hash=SUBJECT,
        institution="CNSS",
        portal="PORTAL_CNIE",
        statement=statement,
        actor=CITIZEN,
        now_us=at_us,
    )[0]


def answered(at_us: int = T0 + DAY_US) -> Case:
    return cases.answer(opened(), DPO, "For your child's school grant, art. 4.", at_us)[0]


def escalated() -> Case:
    return cases.escalate(answered(), CITIZEN, "Not convinced.", T0 + 2 * DAY_US)[0]


def closed() -> Case:
    return cases.accept(answered(), CITIZEN, T0 + 2 * DAY_US)[0]


# Every step as (case, actor, now) -> result, so refusals can be tried across the table.
STEPS: dict[str, Step] = {
    "answer": lambda c, a, t: cases.answer(c, a, "An answer.", t),
    "accept": cases.accept,
    "escalate": lambda c, a, t: cases.escalate(c, a, "Not satisfied.", t),
    "escalate_overdue": cases.escalate_overdue,
    "uphold": lambda c, a, t: cases.decide(c, a, "upheld", "The access was unlawful.", t),
    "dismiss": lambda c, a, t: cases.decide(c, a, "dismissed", "The access was lawful.", t),
    "withdraw": cases.withdraw,
}
RIGHT_ACTOR = {
    "answer": DPO,
    "accept": CITIZEN,
    "escalate": CITIZEN,
    "escalate_overdue": SWEEP,
    "uphold": REGULATOR,
    "dismiss": REGULATOR,
    "withdraw": CITIZEN,
}
ALLOWED_FROM = {
    "answer": {OPEN},
    "accept": {ANSWERED},
    "escalate": {ANSWERED},
    "escalate_overdue": {OPEN},
    "uphold": {ESCALATED},
    "dismiss": {ESCALATED},
    "withdraw": {OPEN, ANSWERED},
}
# A time at which the state's deadlines allow the step (the sweep needs an overdue case).
WHEN = {"escalate_overdue": DUE}


def in_state(state: str) -> Case:
    return {OPEN: opened, ANSWERED: answered, ESCALATED: escalated, CLOSED: closed}[state]()


def refused(reason: Reason, step: Callable[[], object]) -> CaseError:
    with pytest.raises(CaseError) as caught:
        step()
    assert caught.value.reason == reason, caught.value.message
    return caught.value


# Opening.


def test_a_citizen_opens_a_case_due_in_thirty_days() -> None:
    case, event = cases.open_case(
        "node-a:42",
        subject_hash=SUBJECT,
        institution="CNSS",
        portal="PORTAL_CNIE",
        statement="  Why did CNSS read my household?\r\n",
        actor=CITIZEN,
        now_us=T0,
    )
    assert case.case_id.startswith("case-")
    assert len(case.case_id) == 21
    assert (case.state, case.version, case.opened_us, case.answer_due_us) == (OPEN, 1, T0, DUE)
    assert (case.institution, case.portal, case.record_id) == ("CNSS", "PORTAL_CNIE", "node-a:42")
    assert case.statement == "Why did CNSS read my household?"
    assert (case.appeal_due_us, case.answer, case.decision, case.outcome) == (None, "", "", "")
    assert event == CaseEvent(
        case.case_id,
        1,
        T0,
        "citizen",
        "PORTAL_CNIE",
        "ref-7f3a",
        "open",
        "",
        OPEN,
        "Why did CNSS read my household?",
    )


def test_each_case_gets_its_own_random_id() -> None:
    assert len({opened().case_id for _ in range(50)}) == 50


@pytest.mark.parametrize("actor", [OTHER_PORTAL, DPO, REGULATOR, SWEEP])
def test_only_a_citizen_through_the_named_portal_opens_a_case(actor: Actor) -> None:
    refused(
        Reason.CASE_NOT_YOURS,
        lambda: cases.open_case(
            "n:1",
            subject_hash=SUBJECT,
            institution="CNSS",
            portal="PORTAL_CNIE",
            statement="why",
            actor=actor,
            now_us=T0,
        ),
    )


@pytest.mark.parametrize(
    "record_id",
    [
        "",
        "node-a",
        "node-a:",
        ":5",
        "node-a:0",
        "node-a:07",
        "a b:1",
        "n:x",
        "n:٣",
        f"n:{2**63}",
        "n" * 181 + ":1",
    ],
)
def test_a_record_id_that_is_not_node_colon_seq_is_refused(record_id: str) -> None:
    error = refused(
        Reason.INVALID_RECORD_ID,
        lambda: cases.open_case(
            record_id,
            subject_hash=SUBJECT,
            institution="CNSS",
            portal="PORTAL_CNIE",
            statement="why",
            actor=CITIZEN,
            now_us=T0,
        ),
    )
    assert error.metadata == {"field": "record_id"}


def test_record_ids_with_colons_in_the_node_and_the_largest_seq_are_accepted() -> None:
    cases.check_record_id("gw:eu-1:9")
    cases.check_record_id(f"n:{2**63 - 1}")


@pytest.mark.parametrize(
    ("subject", "institution"),
    [("1234567890", "CNSS"), ("AB" * 32, "CNSS"), (SUBJECT, "cnss"), (SUBJECT, "")],
)
def test_a_raw_idcs_or_a_malformed_institution_is_a_callers_bug(
    subject: str, institution: str
) -> None:
    with pytest.raises(ValueError, match=r"subject_hash|institution id"):
        cases.open_case(
            "n:1",
            subject_hash=subject,
            institution=institution,
            portal="PORTAL_CNIE",
            statement="why",
            actor=CITIZEN,
            now_us=T0,
        )


# Allowed steps.


def test_the_dpo_answers_and_the_appeal_window_opens() -> None:
    case = opened()
    new, event = cases.answer(case, DPO, " The answer. \n", T0 + DAY_US)
    assert (new.state, new.version, new.answer, new.updated_us) == (
        ANSWERED,
        2,
        "The answer.",
        T0 + DAY_US,
    )
    assert new.appeal_due_us == T0 + DAY_US + APPEAL_DAYS * DAY_US
    assert event == CaseEvent(
        case.case_id,
        2,
        T0 + DAY_US,
        "dpo",
        "CNSS",
        DPO.id,
        "answer",
        OPEN,
        ANSWERED,
        "The answer.",
    )


def test_the_citizen_accepts_the_answer_and_the_case_closes() -> None:
    new, event = cases.accept(answered(), CITIZEN, T0 + 2 * DAY_US)
    assert (new.state, new.outcome, new.version) == (CLOSED, ACCEPTED, 3)
    assert (event.action, event.from_state, event.to_state, event.text) == (
        "accept",
        ANSWERED,
        CLOSED,
        "",
    )


def test_the_citizen_escalates_the_answer_with_a_reason() -> None:
    new, event = cases.escalate(answered(), CITIZEN, "Not convinced.", T0 + 2 * DAY_US)
    assert (new.state, new.version, new.updated_us) == (ESCALATED, 3, T0 + 2 * DAY_US)
    assert (event.action, event.from_state, event.to_state, event.text) == (
        "escalate",
        ANSWERED,
        ESCALATED,
        "Not convinced.",
    )


def test_the_sweep_escalates_an_unanswered_case_at_its_due_time() -> None:
    new, event = cases.escalate_overdue(opened(), SWEEP, DUE)
    assert (new.state, new.version, new.outcome) == (ESCALATED, 2, "")
    assert (event.actor_kind, event.actor_institution, event.action) == (
        "system",
        "",
        "escalate_overdue",
    )


@pytest.mark.parametrize(("outcome", "action"), [("upheld", "uphold"), ("dismissed", "dismiss")])
def test_the_regulator_decides_an_escalated_case(outcome: str, action: str) -> None:
    new, event = cases.decide(escalated(), REGULATOR, outcome, "Reasons.", T0 + 9 * DAY_US)
    assert (new.state, new.outcome, new.decision, new.version) == (CLOSED, outcome, "Reasons.", 4)
    assert (event.action, event.from_state, event.to_state) == (action, ESCALATED, CLOSED)
    assert new.answer == "For your child's school grant, art. 4."  # kept beside the decision


@pytest.mark.parametrize("state", [OPEN, ANSWERED])
def test_the_citizen_withdraws_an_open_or_answered_case(state: str) -> None:
    case = in_state(state)
    new, event = cases.withdraw(case, CITIZEN, T0 + 3 * DAY_US)
    assert (new.state, new.outcome, new.version) == (CLOSED, "withdrawn", case.version + 1)
    assert (event.from_state, event.to_state) == (state, CLOSED)


def test_the_regulator_decides_an_overdue_case_nobody_answered() -> None:
    case, _ = cases.escalate_overdue(opened(), SWEEP, DUE + 1)
    new, _ = cases.decide(case, REGULATOR, "upheld", "No answer came.", DUE + 2)
    assert (new.state, new.outcome, new.answer, new.version) == (CLOSED, "upheld", "", 3)


# Refused steps: the wrong actor (before the state is looked at), then the wrong state.


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("actor", [CITIZEN, OTHER_PORTAL, DPO, OTHER_DPO, REGULATOR, SWEEP])
def test_each_step_is_refused_to_every_other_actor(step: str, actor: Actor) -> None:
    if actor == RIGHT_ACTOR[step]:
        return
    for state in sorted(ALLOWED_FROM[step] | {CLOSED}):
        with pytest.raises(CaseError) as caught:
            STEPS[step](in_state(state), actor, DUE)
        assert caught.value.reason == Reason.CASE_NOT_YOURS, (state, caught.value.message)


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("state", [OPEN, ANSWERED, ESCALATED, CLOSED])
def test_each_step_is_refused_from_every_other_state(step: str, state: str) -> None:
    case = in_state(state)
    now = WHEN.get(step, T0 + 3 * DAY_US)
    if state in ALLOWED_FROM[step]:
        new, event = STEPS[step](case, RIGHT_ACTOR[step], now)
        assert (event.from_state, event.to_state, event.seq) == (state, new.state, new.version)
        return
    error = refused(Reason.CASE_STATE, lambda: STEPS[step](case, RIGHT_ACTOR[step], now))
    assert code_name(error.reason) == "FAILED_PRECONDITION"


def test_the_refusals_carry_their_status() -> None:
    error = refused(Reason.CASE_NOT_YOURS, lambda: cases.answer(opened(), OTHER_DPO, "x", T0))
    assert isinstance(error, ExchangeError)
    assert code_name(error.reason) == "PERMISSION_DENIED"
    assert "CNSS" not in error.message  # tells a stranger nothing of the case


# Deadlines, at the boundary.


def test_an_answer_is_accepted_until_just_before_it_is_due() -> None:
    case = opened()
    assert cases.answer(case, DPO, "Just in time.", DUE - 1)[0].state == ANSWERED
    refused(Reason.CASE_STATE, lambda: cases.answer(case, DPO, "Too late.", DUE))


def test_a_case_is_overdue_from_its_due_time_and_only_while_open() -> None:
    case = opened()
    assert not cases.overdue(case, DUE - 1)
    assert cases.overdue(case, DUE)
    refused(Reason.CASE_STATE, lambda: cases.escalate_overdue(case, SWEEP, DUE - 1))
    assert not cases.overdue(answered(), DUE + 1)
    refused(Reason.CASE_STATE, lambda: cases.escalate_overdue(answered(), SWEEP, DUE + 1))


def test_the_citizen_escalates_until_just_before_the_appeal_window_closes() -> None:
    case = answered()
    assert case.appeal_due_us is not None
    last = case.appeal_due_us - 1
    assert cases.escalate(case, CITIZEN, "Still no.", last)[0].state == ESCALATED
    refused(Reason.CASE_STATE, lambda: cases.escalate(case, CITIZEN, "Too late.", last + 1))


def test_after_the_appeal_window_the_citizen_may_still_accept_or_withdraw() -> None:
    case = answered()
    late = T0 + 100 * DAY_US
    assert cases.accept(case, CITIZEN, late)[0].outcome == ACCEPTED
    assert cases.withdraw(case, CITIZEN, late)[0].outcome == "withdrawn"


def test_allowed_actions_are_those_the_steps_accept() -> None:
    assert cases.allowed_actions(opened(), DPO, T0) == ("answer",)
    assert cases.allowed_actions(opened(), DPO, DUE) == ()
    assert cases.allowed_actions(opened(), SWEEP, DUE) == ("escalate_overdue",)
    assert cases.allowed_actions(opened(), CITIZEN, T0) == ("withdraw",)
    assert cases.allowed_actions(answered(), CITIZEN, T0 + 2 * DAY_US) == (
        "accept",
        "escalate",
        "withdraw",
    )
    assert cases.allowed_actions(answered(), CITIZEN, T0 + 99 * DAY_US) == ("accept", "withdraw")
    assert cases.allowed_actions(escalated(), REGULATOR, T0) == ("uphold", "dismiss")
    assert cases.allowed_actions(escalated(), CITIZEN, T0) == ()
    assert cases.allowed_actions(closed(), REGULATOR, T0) == ()
    assert cases.allowed_actions(opened(), OTHER_DPO, T0) == ()


# Texts.


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "x" * 2001,
        "a\x00b",
        "a\tb",
        "a\x1bb",
        "a\rb",
        "a\x7fb",
        "a\x85b",
        "a\ud800b",
    ],
)
def test_texts_empty_too_long_or_with_control_characters_are_refused(text: str) -> None:
    error = refused(Reason.CASE_TEXT_INVALID, lambda: cases.answer(opened(), DPO, text, T0))
    assert error.metadata == {"field": "text"}
    assert code_name(error.reason) == "INVALID_ARGUMENT"


def test_a_statement_is_checked_by_the_same_rules() -> None:
    error = refused(Reason.CASE_TEXT_INVALID, lambda: opened(statement=" \n "))
    assert error.metadata == {"field": "statement"}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("x" * 2000, "x" * 2000),
        ("  " + "y" * 2000 + "\n\n", "y" * 2000),
        ("Line one\r\nLine two", "Line one\nLine two"),
        ("مرحبا", "مرحبا"),
        ("a\u200fb", "a\u200fb"),
    ],
)
def test_texts_within_bounds_are_kept_stripped_with_newlines(text: str, kept: str) -> None:
    assert cases.answer(opened(), DPO, text, T0)[0].answer == kept


def test_a_decision_needs_a_known_outcome_and_a_text() -> None:
    error = refused(
        Reason.CASE_TEXT_INVALID, lambda: cases.decide(escalated(), REGULATOR, "maybe", "x", T0)
    )
    assert error.metadata == {"field": "outcome"}
    error = refused(
        Reason.CASE_TEXT_INVALID, lambda: cases.decide(escalated(), REGULATOR, "upheld", " ", T0)
    )
    assert error.metadata == {"field": "decision"}
    refused(Reason.CASE_NOT_YOURS, lambda: cases.decide(escalated(), DPO, "maybe", "x", T0))
    refused(Reason.CASE_STATE, lambda: cases.decide(opened(), REGULATOR, "maybe", "x", T0))


def test_an_escalation_needs_a_reason() -> None:
    refused(Reason.CASE_TEXT_INVALID, lambda: cases.escalate(answered(), CITIZEN, "", T0))


# Versions and history.


def test_versions_increase_by_one_and_events_chain_states() -> None:
    case, first = cases.open_case(
        "n:1",
        subject_hash=SUBJECT,
        institution="CNSS",
        portal="PORTAL_CNIE",
        statement="why",
        actor=CITIZEN,
        now_us=T0,
    )
    history = [first]
    for step, at in (("answer", T0 + 1), ("escalate", T0 + 2), ("dismiss", T0 + 3)):
        before = case
        case, event = STEPS[step](case, RIGHT_ACTOR[step], at)
        assert case.version == before.version + 1 == event.seq
        assert (event.from_state, event.to_state, event.at_us) == (before.state, case.state, at)
        history.append(event)
    assert [e.seq for e in history] == [1, 2, 3, 4]
    assert [e.action for e in history] == ["open", "answer", "escalate", "dismiss"]
    assert all(b.from_state == a.to_state for a, b in itertools.pairwise(history))


def test_a_step_leaves_the_case_it_was_given_unchanged() -> None:
    case = opened()
    cases.answer(case, DPO, "An answer.", T0)
    assert (case.state, case.version, case.answer) == (OPEN, 1, "")


@pytest.mark.parametrize(
    ("kind", "institution", "actor_id"),
    [
        ("officer", "CNSS", "x"),
        ("dpo", "cnss", "x"),
        ("dpo", "", "x"),
        ("dpo", "CNSS", ""),
        ("citizen", "PORTAL", "Amina Benali"),
        ("dpo", "CNSS", "x" * 129),
    ],
)
def test_an_actor_must_be_a_known_kind_an_institution_and_a_pseudonym(
    kind: str, institution: str, actor_id: str
) -> None:
    with pytest.raises(ValueError, match="actor"):
        Actor(kind, institution, actor_id)
