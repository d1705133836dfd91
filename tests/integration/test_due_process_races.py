"""The ingester and the due-process sweep run on threads of their own, in every replica,
against one event store: what each writes must never contradict the other (docs/events.md,
"Due process"). On SQLite and PostgreSQL.

The registry's journal here is an in-memory list of rows (the Journal protocol the
ingester reads; the registry itself is not what these tests are about), and the race is
forced by a store that lets the sweep commit at the worst moment: after the ingester read
the action's state, before its append.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.registry_db import JournalRow
from gateway.events import actions
from gateway.events.ingest import Ingester
from gateway.events.model import ActionChange, NewEvent
from gateway.events.store import FILE_NAME, EventStore, open_event_store
from gateway.pipeline import due_process, programmes
from tests.support import databases

T0 = 1_780_000_000_000_000
HOUSEHOLD = "H000000042"
CATALOGUE = programmes.load_default()


class Journal:
    """An in-memory journal of one source (RSU)."""

    def __init__(self) -> None:
        self.rows: list[JournalRow] = []

    def add(
        self,
        kind: str,
        before: float,
        after: float,
        corrects: str | None = None,
        household: str = HOUSEHOLD,
    ) -> str:
        seq = len(self.rows) + 1
        event_id = f"RSU-{seq}"
        self.rows.append(
            JournalRow(
                source="RSU",
                seq=seq,
                event_id=event_id,
                type="correction" if corrects else kind,
                effective="2026-11-04",
                recorded="2026-11-05T08:30:00.000000Z",
                idcs=None,
                household_id=household,
                before={"score": before},
                after={"score": after},
                corrects=corrects,
                corrected_type=kind if corrects else None,
                facts={"household_id": household, "score": after, "schemes": []},
            )
        )
        return event_id

    def journal_heads(self) -> dict[str, int]:
        return {"RSU": len(self.rows)} if self.rows else {}

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]:
        return self.rows[seq : seq + limit]


class SweepFirst:
    """The real store, with the sweep's move committed just before the ingester's next
    append, once."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.before_append: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append(
        self, events: Sequence[NewEvent], now_us: int, changes: Sequence[ActionChange] = ()
    ) -> int:
        while self.before_append:
            self.before_append.pop(0)()
        return self.store.append(events, now_us, changes)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    with databases.store_database(request.param, tmp_path, open_event_store, FILE_NAME) as db:
        yield db.open()


def _types(store: EventStore, source: str) -> list[tuple[int, str, str]]:
    page = store.page(
        0,
        through=store.bounds().head,
        types=["eligibility.changed", "action.proposed", "action.withdrawn"],
        subscription_id=None,
        limit=1000,
    )
    return [(e.source_seq, e.type, e.event_id) for e in page.events if e.source == source]


def _asd(store: EventStore) -> due_process.ProposedAction:
    (action,) = [a for (h, p), a in store.holding([HOUSEHOLD]).items() if p == "ASD"]
    return action


def _confirm(store: EventStore, action: due_process.ProposedAction) -> None:
    """What the sweep does when the notice is over."""
    done = replace(action, state=due_process.CONFIRMED, resolution="notice_over", resolved_us=T0)
    assert store.settle(
        done,
        action.state,
        lambda seq: actions.carried_out(done, seq, T0),
        actions.SWEPT,
        T0,
    )


def test_a_restoring_change_read_before_the_sweep_carried_the_action_out_reverses_it(
    store: EventStore,
) -> None:
    journal, racing = Journal(), SweepFirst(store)
    ingester = Ingester(journal, racing, CATALOGUE, lambda _: "", clock=lambda: T0)
    rescoring = journal.add("household.rescored", 9.0, 12.0)
    ingester.run_once()
    action = _asd(store)
    assert action.state == due_process.PENDING
    journal.add("household.rescored", 12.0, 9.0, corrects=rescoring)
    racing.before_append.append(lambda: _confirm(store, action))
    ingester.run_once()  # derived a withdrawal of a pending action: refused, nothing written
    assert ingester.faults == 1
    assert store.heads()["RSU"] == 1
    ingester.run_once()  # derives again: the action was carried out, so it is reversed
    reversed_ = store.action(action.action_id)
    assert reversed_ is not None
    assert reversed_.state == due_process.REVERSED
    final = [t for t in _types(store, "JISR") if t[1] == "eligibility.changed" and "ASD" in t[2]]
    assert [t[1] for t in final] == ["eligibility.changed"]
    assert [t[1] for t in _types(store, actions.SWEPT)] == ["eligibility.changed"]


def test_the_sweep_committing_between_numbering_and_append_takes_no_derived_number(
    store: EventStore,
) -> None:
    """The sweep carries out one household's action while the ingester numbers another's
    proposal: both reach the log, each in its own source's sequence."""
    journal, racing = Journal(), SweepFirst(store)
    ingester = Ingester(journal, racing, CATALOGUE, lambda _: "", clock=lambda: T0)
    journal.add("household.rescored", 9.0, 12.0)
    ingester.run_once()
    first = _asd(store)
    racing.before_append.append(lambda: _confirm(store, first))
    second = journal.add("household.rescored", 9.0, 12.0, household="H000000043")
    ingester.run_once()
    assert ingester.faults == 0
    proposals = [t[2] for t in _types(store, "JISR") if t[1] == "action.proposed"]
    assert f"{second}/action/ASD" in proposals
    derived = _types(store, "JISR")
    assert [seq for seq, _, _ in derived] == list(range(1, len(derived) + 1))
    assert [t[1] for t in _types(store, actions.SWEPT)] == ["eligibility.changed"]


class OtherReplicaFirst(SweepFirst):
    """The real store, with another replica's whole round committed after this replica
    read the registry's head (its first `heads`) and before it numbers what it derives (its
    second), once."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.other: Any = None
        self._reads = 0

    def heads(self) -> dict[str, int]:
        self._reads += 1
        if self._reads == 2 and self.other is not None:
            self.other()
        return self.store.heads()


def test_a_replica_late_on_a_change_derives_nothing_more_from_it(
    store: EventStore, tmp_path: Path
) -> None:
    """Replica A adds a correction and withdraws the action; replica B, which read the same
    correction before A committed, then sees no action holding the benefit: it must not
    send an eligibility change for a benefit that never stopped."""
    journal = Journal()
    late = OtherReplicaFirst(store)
    first = Ingester(journal, store, CATALOGUE, lambda _: "", clock=lambda: T0)
    second = Ingester(journal, late, CATALOGUE, lambda _: "", clock=lambda: T0)
    rescoring = journal.add("household.rescored", 9.0, 12.0)
    first.run_once()
    journal.add("household.rescored", 12.0, 9.0, corrects=rescoring)
    late.other = first.run_once
    second.run_once()
    kinds = [t[1] for t in _types(store, "JISR")]
    assert kinds.count("action.withdrawn") == 2  # ASD and AMOT, once each
    assert "eligibility.changed" not in kinds
    assert second.faults == 0
