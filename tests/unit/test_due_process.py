"""Due process before a benefit ends: what a turned decision does, when a proposed action
is carried out or dropped, and what the exchange answers while it waits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.contests import cases
from gateway.pb.jisr.v1.registry_pb2 import Payment, ReasonCode
from gateway.pipeline import due_process
from gateway.pipeline.due_process import (
    CONFIRMED,
    CONTEST_LOST,
    CONTEST_UPHELD,
    CONTESTED,
    CORRECTED,
    DAY_US,
    FACTS_RESTORED,
    KEPT,
    NOTICE_OVER,
    PENDING,
    RELEASED,
    REVERSED,
    WITHDRAWN,
    Contest,
    ProposedAction,
    Standing,
    Step,
    on_turn,
    overlay,
    propose,
    settle,
    withdrawn_because,
)

NOW_US = 1_800_000_000_000_000
CAUSE = "evt-0042"
PROGRAMME = "amo-tadamon"

BELOW = (ReasonCode.REASON_CODE_SCORE_BELOW_THRESHOLD,)
ABOVE = (ReasonCode.REASON_CODE_SCORE_ABOVE_THRESHOLD,)
EMPTIED = (ReasonCode.REASON_CODE_NO_LIVING_MEMBER,)
COVERED = (ReasonCode.REASON_CODE_OTHER_AMO_COVERAGE,)


def _proposal(notice_days: float = 30) -> ProposedAction:
    """A benefit ended by a score above the threshold, its notice running from NOW_US."""
    return propose(
        cause=CAUSE,
        household_id="hh-7",
        programme=PROGRAMME,
        notice_days=notice_days,
        now_us=NOW_US,
        reasons=ABOVE,
        previous_reasons=BELOW,
        threshold_version="2026-01",
    )


def _action(state: str = PENDING, reasons: tuple[int, ...] = ABOVE) -> ProposedAction:
    """The same action, moved to `state`, ending the benefit for `reasons`."""
    return replace(_proposal(), state=state, reasons=reasons)


def _open() -> Contest:
    return Contest(case_id="case-1", closed=False, outcome="")


def _closed(outcome: str) -> Contest:
    return Contest(case_id="case-1", closed=True, outcome=outcome)


# propose


def test_a_proposed_action_starts_pending() -> None:
    assert _proposal().state == PENDING


def test_a_proposed_action_is_named_for_its_cause_and_programme() -> None:
    assert _proposal().action_id == f"{CAUSE}/action/{PROGRAMME}"


def test_the_notice_runs_from_when_the_action_is_proposed() -> None:
    action = _proposal(notice_days=30)
    assert action.proposed_us == NOW_US
    assert action.notice_until_us == NOW_US + 30 * DAY_US


def test_a_fractional_notice_runs_for_its_share_of_a_day() -> None:
    assert _proposal(notice_days=0.5).notice_until_us == NOW_US + DAY_US // 2


def test_a_tiny_fractional_notice_still_lasts_at_least_a_microsecond() -> None:
    action = _proposal(notice_days=1e-15)
    assert action.notice_until_us == NOW_US + 1


def test_a_proposed_action_records_the_decisions_before_and_after_the_change() -> None:
    action = _proposal()
    assert (action.reasons, action.previous_reasons) == (ABOVE, BELOW)


def test_a_proposed_action_is_not_yet_resolved() -> None:
    action = _proposal()
    assert (action.resolution, action.resolved_us) == ("", 0)


# on_turn: a decision that ends a benefit


def test_a_change_that_ends_a_benefit_under_a_notice_is_proposed() -> None:
    assert on_turn(ends=True, notice_days=30, holding=None) is Step.PROPOSE


def test_a_change_that_ends_a_benefit_without_notice_is_published_at_once() -> None:
    assert on_turn(ends=True, notice_days=0, holding=None) is Step.PUBLISH


@pytest.mark.parametrize("state", [PENDING, CONTESTED, KEPT])
def test_a_second_change_that_would_end_a_benefit_already_held_adds_nothing(state: str) -> None:
    assert on_turn(ends=True, notice_days=30, holding=_action(state)) is Step.NOTHING


def test_a_change_that_ends_a_benefit_after_a_confirmed_action_is_proposed_again() -> None:
    assert on_turn(ends=True, notice_days=30, holding=_action(CONFIRMED)) is Step.PROPOSE


# on_turn: a decision that restores a benefit


def test_a_change_that_restores_a_benefit_nothing_holds_is_published() -> None:
    assert on_turn(ends=False, notice_days=30, holding=None) is Step.PUBLISH


@pytest.mark.parametrize("state", [PENDING, CONTESTED])
def test_facts_turning_back_while_an_action_waits_withdraw_it(state: str) -> None:
    assert on_turn(ends=False, notice_days=30, holding=_action(state)) is Step.WITHDRAW


def test_facts_turning_back_while_a_contest_keeps_the_benefit_release_it() -> None:
    assert on_turn(ends=False, notice_days=30, holding=_action(KEPT)) is Step.RELEASE


def test_facts_turning_back_after_a_confirmed_action_reverse_it() -> None:
    assert on_turn(ends=False, notice_days=30, holding=_action(CONFIRMED)) is Step.REVERSE


# withdrawn_because


def test_a_correction_of_the_change_that_proposed_the_action_withdraws_it_as_corrected() -> None:
    assert withdrawn_because(_action(), corrects=CAUSE) == CORRECTED


def test_a_correction_of_another_change_withdraws_it_as_facts_restored() -> None:
    assert withdrawn_because(_action(), corrects="evt-0001") == FACTS_RESTORED


def test_a_later_change_that_corrects_nothing_withdraws_it_as_facts_restored() -> None:
    assert withdrawn_because(_action(), corrects=None) == FACTS_RESTORED


# settle


def test_a_pending_action_becomes_contested_as_soon_as_a_case_is_open() -> None:
    action = _action()
    assert settle(action, _open(), NOW_US + DAY_US) == replace(action, state=CONTESTED)


def test_a_contested_action_waits_while_its_case_is_open_even_after_the_notice() -> None:
    action = _action(CONTESTED)
    assert settle(action, _open(), action.notice_until_us + DAY_US) is None


@pytest.mark.parametrize("state", [PENDING, CONTESTED])
def test_an_upheld_contest_keeps_the_benefit(state: str) -> None:
    action, now = _action(state), NOW_US + DAY_US
    settled = settle(action, _closed(cases.UPHELD), now)
    assert settled == replace(action, state=KEPT, resolution=CONTEST_UPHELD, resolved_us=now)


@pytest.mark.parametrize("outcome", [cases.DISMISSED, cases.ACCEPTED, cases.WITHDRAWN])
def test_a_lost_contest_before_the_notice_is_over_waits_for_the_notice(outcome: str) -> None:
    action = _action(CONTESTED)
    assert settle(action, _closed(outcome), action.notice_until_us - 1) is None


@pytest.mark.parametrize("outcome", [cases.DISMISSED, cases.ACCEPTED, cases.WITHDRAWN])
def test_a_lost_contest_after_the_notice_confirms_the_action(outcome: str) -> None:
    action = _action(CONTESTED)
    now = action.notice_until_us + 1
    settled = settle(action, _closed(outcome), now)
    assert settled == replace(action, state=CONFIRMED, resolution=CONTEST_LOST, resolved_us=now)


def test_an_uncontested_action_waits_until_its_notice_is_over() -> None:
    action = _action()
    assert settle(action, None, action.notice_until_us - 1) is None


def test_an_uncontested_action_is_confirmed_the_moment_its_notice_ends() -> None:
    action = _action()
    now = action.notice_until_us
    settled = settle(action, None, now)
    assert settled == replace(action, state=CONFIRMED, resolution=NOTICE_OVER, resolved_us=now)


@pytest.mark.parametrize("state", [CONFIRMED, WITHDRAWN, KEPT, RELEASED, REVERSED])
@pytest.mark.parametrize("contest", [None, _open(), _closed(cases.UPHELD)])
def test_an_action_no_longer_waiting_does_not_move(state: str, contest: Contest | None) -> None:
    action = _action(state)
    assert settle(action, contest, action.notice_until_us + DAY_US) is None


# overlay: no action


def test_without_an_action_an_eligible_household_is_paid() -> None:
    assert overlay(True, BELOW, None, "hold") == Standing(True, BELOW, due_process.DUE, None)


def test_without_an_action_an_ineligible_household_is_not_paid() -> None:
    assert overlay(False, ABOVE, None, "hold") == Standing(False, ABOVE, due_process.NONE, None)


# overlay: an action waiting


@pytest.mark.parametrize("state", [PENDING, CONTESTED])
@pytest.mark.parametrize(
    ("during_notice", "payment"), [("hold", due_process.HELD), ("pay", due_process.DUE)]
)
def test_a_household_stays_eligible_on_its_old_reasons_while_an_action_waits(
    state: str, during_notice: str, payment: Payment.ValueType
) -> None:
    action = _action(state)
    assert overlay(False, ABOVE, action, during_notice) == Standing(True, BELOW, payment, action)


def test_an_emptied_household_stays_eligible_on_the_facts_reasons_while_its_action_waits() -> None:
    action = _action(reasons=EMPTIED)
    standing = overlay(True, BELOW, action, "hold")
    assert standing == Standing(True, BELOW, due_process.HELD, action)


def test_facts_turned_back_before_the_action_is_withdrawn_are_answered_as_they_are() -> None:
    assert overlay(True, COVERED, _action(), "hold") == Standing(
        True, COVERED, due_process.DUE, None
    )


# overlay: an action that no longer waits


def test_a_household_whose_contest_was_upheld_stays_eligible_and_paid() -> None:
    standing = overlay(False, ABOVE, _action(KEPT), "hold")
    assert standing == Standing(True, BELOW, due_process.DUE, None)


def test_a_confirmed_end_for_want_of_a_living_member_stands_whatever_the_score() -> None:
    action = _action(CONFIRMED, reasons=EMPTIED)
    assert overlay(True, BELOW, action, "pay") == Standing(False, EMPTIED, due_process.NONE, None)


def test_a_confirmed_end_on_the_score_leaves_the_facts_their_own_say() -> None:
    action = _action(CONFIRMED)
    assert overlay(True, BELOW, action, "pay") == Standing(True, BELOW, due_process.DUE, None)
    assert overlay(False, ABOVE, action, "pay") == Standing(False, ABOVE, due_process.NONE, None)
