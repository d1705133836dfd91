"""Proposed actions in the event stores: one suite, run against SQLite and against PostgreSQL.

Due process (gateway/pipeline/due_process.py) keeps each proposed action beside the event
that proposes, withdraws or settles it, and replicas sharing one log rely on both backends
to: write an action's change only with an event that call actually added (so replicas
offering the same events change it once), move it only from the state it was read in, tell
which action holds a household's benefit, list what the sweep must record or settle, and
settle it together with its event, once, whoever races. PostgreSQL tests get a fresh
schema each (tests/support/databases.py says when they run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.events.model import ActionChange, NewEvent, StaleActionError
from gateway.events.store import FILE_NAME, EventStore, open_event_store
from gateway.pb.jisr.v1.registry_pb2 import ReasonCode
from gateway.pipeline.due_process import (
    CONFIRMED,
    CONTEST_UPHELD,
    CONTESTED,
    DAY_US,
    FACTS_RESTORED,
    KEPT,
    NOTICE_OVER,
    PENDING,
    RELEASED,
    REVERSED,
    WAITING,
    WITHDRAWN,
    ProposedAction,
    propose,
)
from tests.support import databases
from tests.support.threads import run_together

T0 = 1_750_000_000_000_000
SECOND = 1_000_000
RSU = "RSU"
DERIVED = "JISR"  # the source of the events a settle appends (gateway/events/actions.py)
RESCORED = "household.rescored"
CHANGED = "eligibility.changed"
HOUSEHOLD_ID = "H042117093"
OTHER_HOUSEHOLD = "H000000001"
PROGRAMME = "amo-tadamon"
OTHER_PROGRAMME = "asd-family"
ABOVE = int(ReasonCode.REASON_CODE_SCORE_ABOVE_THRESHOLD)
BELOW = int(ReasonCode.REASON_CODE_SCORE_BELOW_THRESHOLD)


EventDatabase = databases.StoreDatabase[EventStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventDatabase]:
    with databases.store_database(request.param, tmp_path, open_event_store, FILE_NAME) as made:
        yield made


@pytest.fixture
def store(db: EventDatabase) -> EventStore:
    return db.open()


def event(
    seq: int,
    source: str = RSU,
    *,
    type_: str = RESCORED,
    household_id: str = HOUSEHOLD_ID,
) -> NewEvent:
    return NewEvent(
        source=source,
        source_seq=seq,
        event_id=f"{source}-2026-11-{seq:06d}",
        type=type_,
        idcs="",
        household_id=household_id,
        recorded_us=T0 - SECOND + seq,
        payload=b"x",
    )


def events(first: int, last: int, source: str = RSU, **kwargs: Any) -> list[NewEvent]:
    return [event(seq, source, **kwargs) for seq in range(first, last + 1)]


def derived(seq: int) -> NewEvent:
    """The event a settle appends at `seq` of the gateway's own source."""
    return event(seq, DERIVED, type_=CHANGED)


def proposal(
    cause_seq: int,
    *,
    household_id: str = HOUSEHOLD_ID,
    programme: str = PROGRAMME,
    at: int = T0,
) -> ProposedAction:
    """The pending action the RSU change `cause_seq` proposes at `at`."""
    return propose(
        cause=event(cause_seq).event_id,
        household_id=household_id,
        programme=programme,
        notice_days=30,
        now_us=at,
        reasons=(ABOVE,),
        previous_reasons=(BELOW,),
        threshold_version="pmt-2026.1",
    )


def offer(store: EventStore, *actions: ProposedAction, now_us: int = T0) -> None:
    """Append one RSU change per action at the source's next sequences, each inserting its
    action (as given, whatever its state)."""
    first = store.heads().get(RSU, 0) + 1
    batch = [event(first + i, household_id=a.household_id) for i, a in enumerate(actions)]
    changes = [ActionChange(RSU, e.source_seq, a) for e, a in zip(batch, actions, strict=True)]
    assert store.append(batch, now_us, changes) == len(batch)


# Offering actions with their events.


def test_an_action_offered_with_its_event_reads_back_as_given(store: EventStore) -> None:
    given = replace(proposal(1), reasons=(ABOVE, BELOW), record_id="", resolution="")
    assert store.append([event(1)], T0, [ActionChange(RSU, 1, given)]) == 1
    assert store.action(given.action_id) == given


def test_an_unknown_action_reads_back_as_none(store: EventStore) -> None:
    offer(store, proposal(1))
    assert store.action(proposal(2).action_id) is None


def test_an_action_without_reasons_reads_back_without_reasons(store: EventStore) -> None:
    given = replace(proposal(1), reasons=(), previous_reasons=())
    offer(store, given)
    assert store.action(given.action_id) == given


def test_an_action_offered_with_an_event_the_log_holds_is_not_written(
    db: EventDatabase,
) -> None:
    first, second = db.open(), db.open()
    first.append([event(1)], T0)
    action = proposal(1)
    assert second.append([event(1)], T0 + SECOND, [ActionChange(RSU, 1, action)]) == 0
    assert second.action(action.action_id) is None
    assert first.action(action.action_id) is None


def test_an_action_whose_event_is_not_in_the_call_is_not_written(store: EventStore) -> None:
    action = proposal(2)
    store.append([event(1)], T0, [ActionChange(RSU, 2, action)])
    assert store.action(action.action_id) is None


def test_only_the_actions_of_the_events_a_call_adds_are_written(store: EventStore) -> None:
    store.append([event(1)], T0)
    held, new = proposal(1), proposal(2)
    changes = [ActionChange(RSU, 1, held), ActionChange(RSU, 2, new)]
    assert store.append(events(1, 2), T0 + SECOND, changes) == 1
    assert store.action(held.action_id) is None
    assert store.action(new.action_id) == new


def test_an_action_offered_with_a_refused_call_is_not_written(store: EventStore) -> None:
    action = proposal(1)
    with pytest.raises(ValueError, match="does not follow"):
        store.append([event(1), event(3)], T0, [ActionChange(RSU, 1, action)])
    assert store.action(action.action_id) is None
    assert store.bounds().head == 0


def test_an_action_offered_again_with_a_new_event_keeps_the_first(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    again = replace(action, threshold_version="pmt-2027.1", proposed_us=T0 + SECOND)
    store.append([event(2)], T0 + SECOND, [ActionChange(RSU, 2, again)])
    assert store.action(action.action_id) == action


# Moving actions with their events.


def test_a_move_offered_with_its_event_applies_from_the_expected_state(
    store: EventStore,
) -> None:
    action = proposal(1)
    offer(store, action)
    withdrawn = replace(
        action, state=WITHDRAWN, resolution=FACTS_RESTORED, resolved_us=T0 + 2 * SECOND
    )
    change = ActionChange(RSU, 2, withdrawn, expected=PENDING)
    assert store.append([event(2)], T0 + SECOND, [change]) == 1
    assert store.action(action.action_id) == withdrawn


def test_a_move_from_a_stale_expected_state_appends_nothing(store: EventStore) -> None:
    """Another process moved the action since it was read: no event may contradict it, so
    the whole append is refused and the ingester derives again."""
    action = proposal(1)
    offer(store, action)
    released = replace(action, state=RELEASED, resolution=FACTS_RESTORED, resolved_us=T0)
    change = ActionChange(RSU, 2, released, expected=KEPT)
    with pytest.raises(StaleActionError, match="no longer kept"):
        store.append([event(2)], T0 + SECOND, [change])
    assert store.action(action.action_id) == action
    assert store.heads()[RSU] == 1


def test_a_move_offered_with_an_event_the_log_holds_is_not_applied(db: EventDatabase) -> None:
    first, second = db.open(), db.open()
    action = proposal(1)
    offer(first, action)
    first.append([event(2)], T0 + SECOND)
    withdrawn = replace(action, state=WITHDRAWN, resolution=FACTS_RESTORED)
    change = ActionChange(RSU, 2, withdrawn, expected=PENDING)
    assert second.append([event(2)], T0 + 2 * SECOND, [change]) == 0
    assert second.action(action.action_id) == action


def test_a_move_changes_only_the_state_resolution_and_resolution_time(
    store: EventStore,
) -> None:
    action = proposal(1)
    offer(store, action)
    assert store.record_action(action.action_id, "audit-0001")
    withdrawn = replace(
        action,
        state=WITHDRAWN,
        resolution=FACTS_RESTORED,
        resolved_us=T0 + SECOND,
        notice_until_us=0,
        reasons=(),
        record_id="",
    )
    store.append([event(2)], T0 + SECOND, [ActionChange(RSU, 2, withdrawn, expected=PENDING)])
    assert store.action(action.action_id) == replace(
        action,
        state=WITHDRAWN,
        resolution=FACTS_RESTORED,
        resolved_us=T0 + SECOND,
        record_id="audit-0001",
    )


def test_a_move_is_written_as_given_even_without_a_resolution_time(store: EventStore) -> None:
    """A move that resolves nothing (to contested) keeps resolved_us 0, by append as by
    settle."""
    action = proposal(1)
    offer(store, action)
    contested = replace(action, state="contested")
    store.append([event(2)], T0 + 5 * SECOND, [ActionChange(RSU, 2, contested, PENDING)])
    assert store.action(action.action_id) == contested


def test_a_proposal_and_its_withdrawal_in_one_call_both_apply(store: EventStore) -> None:
    action = proposal(1)
    withdrawn = replace(action, state=WITHDRAWN, resolution=FACTS_RESTORED, resolved_us=T0)
    changes = [ActionChange(RSU, 1, action), ActionChange(RSU, 2, withdrawn, expected=PENDING)]
    assert store.append(events(1, 2), T0, changes) == 2
    assert store.action(action.action_id) == withdrawn


def test_two_replicas_offering_the_same_changes_at_once_apply_them_once(
    db: EventDatabase,
) -> None:
    replicas = [db.open(), db.open()]
    action = proposal(1)
    withdrawn = replace(action, state=WITHDRAWN, resolution=FACTS_RESTORED, resolved_us=T0)
    changes = [ActionChange(RSU, 1, action), ActionChange(RSU, 2, withdrawn, expected=PENDING)]
    results = run_together(2, lambda i: replicas[i].append(events(1, 2), T0 + i, changes))
    assert sorted(r for r in results if isinstance(r, int)) == [0, 2]
    assert replicas[0].action(action.action_id) == withdrawn
    assert replicas[1].bounds().head == 2


# Which action holds a household's benefit.


def test_holding_gives_the_newest_holding_action_per_household_and_programme(
    store: EventStore,
) -> None:
    confirmed = replace(proposal(1, at=T0), state=CONFIRMED, resolution=NOTICE_OVER)
    pending = proposal(2, at=T0 + SECOND)
    contested = replace(proposal(3, at=T0 + 2 * SECOND), state=CONTESTED)
    kept = replace(
        proposal(4, programme=OTHER_PROGRAMME, at=T0 + 3 * SECOND),
        state=KEPT,
        resolution=CONTEST_UPHELD,
    )
    other = proposal(5, household_id=OTHER_HOUSEHOLD, at=T0)
    offer(store, pending, contested, confirmed, kept, other)  # not in the order proposed
    assert store.holding([HOUSEHOLD_ID, OTHER_HOUSEHOLD]) == {
        (HOUSEHOLD_ID, PROGRAMME): contested,
        (HOUSEHOLD_ID, OTHER_PROGRAMME): kept,
        (OTHER_HOUSEHOLD, PROGRAMME): other,
    }


def test_holding_ignores_withdrawn_released_and_reversed_actions(store: EventStore) -> None:
    pending = proposal(1, at=T0)
    newer = [
        replace(proposal(2, at=T0 + SECOND), state=WITHDRAWN, resolution=FACTS_RESTORED),
        replace(proposal(3, at=T0 + 2 * SECOND), state=RELEASED, resolution=FACTS_RESTORED),
        replace(proposal(4, at=T0 + 3 * SECOND), state=REVERSED, resolution=FACTS_RESTORED),
    ]
    ended = replace(proposal(5, household_id=OTHER_HOUSEHOLD), state=REVERSED)
    offer(store, pending, *newer, ended)
    assert store.holding([HOUSEHOLD_ID, OTHER_HOUSEHOLD]) == {(HOUSEHOLD_ID, PROGRAMME): pending}


def test_holding_answers_only_for_the_households_asked(store: EventStore) -> None:
    offer(store, proposal(1), proposal(2, household_id=OTHER_HOUSEHOLD))
    assert list(store.holding([OTHER_HOUSEHOLD])) == [(OTHER_HOUSEHOLD, PROGRAMME)]
    assert store.holding(["H999999999"]) == {}


def test_holding_of_no_households_is_empty(store: EventStore) -> None:
    offer(store, proposal(1))
    assert store.holding([]) == {}
    assert store.holding([], PROGRAMME) == {}


def test_holding_for_one_programme_leaves_out_the_others(store: EventStore) -> None:
    mine = proposal(1)
    offer(store, mine, proposal(2, programme=OTHER_PROGRAMME, at=T0 + SECOND))
    assert store.holding([HOUSEHOLD_ID], PROGRAMME) == {(HOUSEHOLD_ID, PROGRAMME): mine}
    assert store.holding([HOUSEHOLD_ID], "no-such-programme") == {}


def test_holding_answers_for_more_than_500_households_in_one_call(store: EventStore) -> None:
    households = [f"H{n:09d}" for n in range(1, 1202)]
    pending = [proposal(n, household_id=h, at=T0 + n) for n, h in enumerate(households, 1)]
    # The last household also has an older confirmed action, and one more programme.
    last = households[-1]
    older = replace(proposal(2000, household_id=last, at=T0), state=CONFIRMED)
    elsewhere = proposal(2001, household_id=last, programme=OTHER_PROGRAMME, at=T0)
    offer(store, *pending, older, elsewhere)
    asked = [*households, households[0], households[700]]  # repeats count once
    found = store.holding(asked)
    expected = {(a.household_id, PROGRAMME): a for a in pending}
    assert found == {**expected, (last, OTHER_PROGRAMME): elsewhere}
    assert store.holding(asked, PROGRAMME) == expected


# Listing actions for the sweep.


def test_actions_lists_those_in_the_states_asked_oldest_proposed_first(
    store: EventStore,
) -> None:
    newest = proposal(1, at=T0 + 3 * SECOND)
    oldest = replace(proposal(2, at=T0), state=CONTESTED)
    middle = proposal(3, at=T0 + SECOND)
    confirmed = replace(proposal(4, at=T0 + 2 * SECOND), state=CONFIRMED)
    offer(store, newest, oldest, middle, confirmed)
    assert store.actions(WAITING, 10) == [oldest, middle, newest]
    assert store.actions([CONFIRMED], 10) == [confirmed]
    assert store.actions([WITHDRAWN], 10) == []


def test_actions_are_at_most_the_limit_and_the_oldest(store: EventStore) -> None:
    listed = [proposal(n, at=T0 + (10 - n) * SECOND) for n in range(1, 6)]
    offer(store, *listed)
    assert store.actions([PENDING], 2) == [listed[4], listed[3]]


# Audit records.


def test_unrecorded_lists_the_waiting_actions_without_an_audit_record_oldest_first(
    store: EventStore,
) -> None:
    """A withdrawn action needs no record: the household will never be asked to contest it."""
    newer = proposal(1, at=T0 + 2 * SECOND)
    recorded = replace(proposal(2, at=T0), record_id="audit-0001")
    withdrawn = replace(proposal(3, at=T0 + SECOND), state=WITHDRAWN)
    older = replace(proposal(4, at=T0 + SECOND // 2), state="contested")
    offer(store, newer, recorded, withdrawn, older)
    assert store.unrecorded(10) == [older, newer]


def test_a_claimed_record_is_not_listed_again_until_its_claim_is_stale(
    store: EventStore,
) -> None:
    action = proposal(1)
    offer(store, action)
    assert store.claim_record(action.action_id, "", "claim:a", T0)
    assert not store.claim_record(action.action_id, "", "claim:b", T0)  # another sweep
    assert store.unrecorded(10, stale_before_us=T0) == []
    (stale,) = store.unrecorded(10, stale_before_us=T0 + 1)
    assert stale.record_id == "claim:a"
    assert store.claim_record(action.action_id, "claim:a", "claim:b", T0 + 1)


def test_a_record_is_noted_only_under_its_claim_with_the_notice_moved(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    store.claim_record(action.action_id, "", "claim:a", T0)
    assert not store.record_action(action.action_id, "node:1", claim="claim:other")
    later = action.notice_until_us + SECOND
    assert store.record_action(action.action_id, "node:1", claim="claim:a", notice_until_us=later)
    assert store.action(action.action_id) == replace(
        action, record_id="node:1", notice_until_us=later
    )


def test_unrecorded_lists_at_most_the_limit(store: EventStore) -> None:
    listed = [proposal(n, at=T0 + n) for n in range(1, 5)]
    offer(store, *listed)
    assert store.unrecorded(3) == listed[:3]


def test_record_action_notes_the_first_record_only(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    assert store.record_action(action.action_id, "audit-0001") is True
    assert store.record_action(action.action_id, "audit-0002") is False
    assert store.action(action.action_id) == replace(action, record_id="audit-0001")


def test_a_recorded_action_is_no_longer_unrecorded(store: EventStore) -> None:
    action, other = proposal(1), proposal(2, at=T0 + SECOND)
    offer(store, action, other)
    store.record_action(action.action_id, "audit-0001")
    assert store.unrecorded(10) == [other]


def test_record_action_of_an_unknown_action_is_false(store: EventStore) -> None:
    assert store.record_action(proposal(1).action_id, "audit-0001") is False
    assert store.action(proposal(1).action_id) is None


# Settling.


def confirm(action: ProposedAction) -> ProposedAction:
    return replace(
        action, state=CONFIRMED, resolution=NOTICE_OVER, resolved_us=action.notice_until_us
    )


def test_settle_moves_the_action_and_appends_its_event_at_the_sources_next_sequence(
    store: EventStore,
) -> None:
    action = replace(proposal(1), record_id="audit-0001")
    offer(store, action)
    store.append([derived(1), derived(2)], T0)
    asked: list[int] = []

    def event_of(seq: int) -> NewEvent:
        asked.append(seq)
        return derived(seq)

    now = T0 + 31 * DAY_US
    assert store.settle(confirm(action), PENDING, event_of, DERIVED, now) is True
    assert asked == [3]
    assert store.action(action.action_id) == confirm(action)
    assert store.heads() == {RSU: 1, DERIVED: 3}
    appended = store.event(derived(3).event_id)
    assert appended is not None
    assert (appended.position, appended.ingested_us) == (4, now)
    assert store.bounds().head == 4


def test_settle_of_a_source_without_events_appends_at_sequence_one(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    assert store.settle(confirm(action), PENDING, derived, DERIVED, T0 + 31 * DAY_US)
    assert store.heads() == {RSU: 1, DERIVED: 1}


def test_settle_without_an_event_moves_the_action_only(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    contested = replace(action, state=CONTESTED)
    assert store.settle(contested, PENDING, None, DERIVED, T0 + SECOND) is True
    assert store.action(action.action_id) == contested
    assert store.heads() == {RSU: 1}
    assert store.bounds().head == 1


def test_a_second_settle_from_the_same_state_returns_false_and_appends_nothing(
    store: EventStore,
) -> None:
    action = proposal(1)
    offer(store, action)
    now = T0 + 31 * DAY_US
    assert store.settle(confirm(action), PENDING, derived, DERIVED, now) is True
    kept = replace(action, state=KEPT, resolution=CONTEST_UPHELD, resolved_us=now + 1)
    assert store.settle(kept, PENDING, derived, DERIVED, now + 1) is False
    assert store.action(action.action_id) == confirm(action)
    assert store.bounds().head == 2
    assert store.heads() == {RSU: 1, DERIVED: 1}


def test_settle_from_a_stale_state_returns_false_and_writes_nothing(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)
    assert store.settle(confirm(action), CONTESTED, derived, DERIVED, T0) is False
    assert store.action(action.action_id) == action
    assert store.heads() == {RSU: 1}


def test_settle_of_an_unknown_action_returns_false_and_appends_nothing(
    store: EventStore,
) -> None:
    assert store.settle(confirm(proposal(1)), PENDING, derived, DERIVED, T0) is False
    assert store.bounds().head == 0
    assert store.heads() == {}


def test_a_settle_whose_event_is_refused_moves_nothing(store: EventStore) -> None:
    action = proposal(1)
    offer(store, action)

    def reused(seq: int) -> NewEvent:
        return replace(derived(seq), event_id=event(1).event_id)  # an id the log holds

    with pytest.raises(ValueError, match="event id"):
        store.settle(confirm(action), PENDING, reused, DERIVED, T0 + 31 * DAY_US)
    assert store.action(action.action_id) == action
    assert store.heads() == {RSU: 1}


def test_two_replicas_settling_the_same_action_at_once_settle_it_once(
    db: EventDatabase,
) -> None:
    replicas = [db.open(), db.open()]
    rounds = 5
    listed = [proposal(n, at=T0 + n) for n in range(1, rounds + 1)]
    offer(replicas[0], *listed)

    def settling(action: ProposedAction) -> Callable[[int], bool]:
        def job(i: int) -> bool:
            return replicas[i].settle(
                confirm(action), PENDING, derived, DERIVED, T0 + 31 * DAY_US + i
            )

        return job

    for n, action in enumerate(listed, 1):
        results = run_together(2, settling(action))
        assert sorted(results, key=repr) == [False, True]
        assert replicas[1].heads() == {RSU: rounds, DERIVED: n}
    assert replicas[1].bounds().head == 2 * rounds
    assert replicas[1].actions([PENDING], 10) == []
    assert replicas[0].actions([CONFIRMED], 10) == [confirm(a) for a in listed]


def test_holding_with_an_empty_programme_name_finds_nothing(store: EventStore) -> None:
    offer(store, proposal(1))
    assert store.holding([HOUSEHOLD_ID], "") == {}


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_alike_on_both_backends(store: EventStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.actions([PENDING], limit)
    with pytest.raises(ValueError, match="limit"):
        store.unrecorded(limit)
