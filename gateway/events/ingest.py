"""Registry journals into the gateway's event log.

A source registry records each change in its journal, in the same transaction as the
change (the embedded registry: adapters/registry_db.py's `change_journal`). The ingester
reads each source's journal after the log's head for that source and appends what it
read (gateway/events/store.py): replicas may all do so, the log keeps each event once.

Reading turns a journal row into the `ChangeEvent` partners may see: scores become bands
(the raw score never leaves the gateway), enumerations their wire numbers, and a person's
event names the household the person belongs to when the gateway reads it, so that a
subscription restricted to households receives its members' deaths. What the row replaced
and put, scores included, stays in the log's `detail` for the gateway's own reasoning.

A journal whose sequence jumps (a row missing) is a source fault: the ingester stops
taking that source at the gap, logs it (source and sequence numbers only) and counts it,
and tries again on its next round; the other sources go on. So does a source whose
journal cannot be read (a remote backend down, or answering outside the contract:
adapters/remote_journal.py).

The journals are the embedded registry's, for the sources whose institution is embedded,
and each remote institution's own, read from its MinistryBackend (`Journals`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from google.type.date_pb2 import Date

from adapters.registry_db import JournalRow
from gateway.base import event_types
from gateway.events import actions, consequences
from gateway.events.actions import DERIVED
from gateway.events.consequences import Turn
from gateway.events.model import ActionChange, NewEvent
from gateway.events.store import EventStore
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pipeline import due_process
from gateway.pipeline.due_process import ProposedAction, Step
from gateway.pipeline.programmes import Catalogue, ScoreBands

log = logging.getLogger("jisr.events")

# Journal rows read and appended in one transaction.
CHUNK = 5_000
# Chunks taken from one source per round at most: a source with a long backlog (or a
# backend that keeps sending) cannot hold the other sources back.
CHUNKS_PER_ROUND = 20


class Journal(Protocol):
    """A source registry's journal, as the ingester reads it."""

    def journal_heads(self) -> dict[str, int]: ...

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]: ...


class Journals:
    """Several journals read as one: each source from the journal that serves it (the
    first to report it). A journal that cannot report its heads is left out of the round,
    logged by institution and error type; the others go on."""

    def __init__(self, journals: list[tuple[Journal, frozenset[str]]]) -> None:
        # Each journal with the sources it may serve (an embedded registry may hold rows
        # of a source whose institution is remote: the remote one is authoritative).
        self._journals = journals
        self._by_source: dict[str, Journal] = {}
        self._failing: set[int] = set()  # journals whose heads could not be read last time

    def journal_heads(self) -> dict[str, int]:
        heads: dict[str, int] = {}
        for index, (journal, sources) in enumerate(self._journals):
            try:
                found = journal.journal_heads()
            except Exception as exc:  # one journal's fault never stalls the others
                if index not in self._failing:  # said once, not every round
                    self._failing.add(index)
                    log.warning(
                        "journal heads unavailable",
                        extra={"sources": sorted(sources), "error": type(exc).__name__},
                    )
                continue
            if index in self._failing:
                self._failing.discard(index)
                log.info("journal heads available again", extra={"sources": sorted(sources)})
            for source, head in found.items():
                if source in sources and source not in heads:
                    heads[source] = head
                    self._by_source[source] = journal
        return heads

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]:
        journal = self._by_source.get(source)
        return journal.journal_after(source, seq, limit) if journal is not None else []


# The household a person belongs to now ("" if none): for a person's events.
HouseholdOf = Callable[[str], str]


def _date(text: str) -> Date:
    day = dt.date.fromisoformat(text)
    return Date(year=day.year, month=day.month, day=day.day)


def _recorded_us(text: str) -> int:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp() * 1_000_000)


def _enum(enum: Any, prefix: str, value: Any) -> int:
    """An enumeration stored as its number or its short name ("CHILD")."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return int(enum.Value(prefix + value))
    return 0


def _relationship(value: Any) -> rec.Relationship.ValueType:
    return rec.Relationship.ValueType(_enum(rec.Relationship, "RELATIONSHIP_", value))


def _region(value: Any) -> rec.Region.ValueType:
    return rec.Region.ValueType(_enum(rec.Region, "REGION_", value))


def _area(value: Any) -> rec.Area.ValueType:
    return rec.Area.ValueType(_enum(rec.Area, "AREA_", value))


def change_event(row: JournalRow, household: str, bands: ScoreBands) -> epb.ChangeEvent:
    """The event partners may see of one journal row (before projection to a grant)."""
    before, after = row.before, row.after
    event = epb.ChangeEvent(
        event_id=row.event_id,
        source=row.source,
        source_seq=row.seq,
        type=event_types.number(row.type),
        effective=_date(row.effective),
        idcs=row.idcs or "",
        household_id=household,
    )
    event.recorded.FromMicroseconds(_recorded_us(row.recorded))
    kind = row.type if row.type != "correction" else (row.corrected_type or "")
    if kind in {"member.joined", "member.left"} or after.get("relationship"):
        event.relationship = _relationship(after.get("relationship") or before.get("relationship"))
    if "score" in after:
        event.score_band = bands.band(float(after["score"]))
    if "score" in before:
        event.previous_score_band = bands.band(float(before["score"]))
    if "region" in after:
        event.region = _region(after["region"])
        event.area = _area(after.get("area"))
    if "region" in before:
        event.previous_region = _region(before["region"])
        event.previous_area = _area(before.get("area"))
    scheme = after.get("scheme") or before.get("scheme")
    if isinstance(scheme, str):
        event.scheme = scheme
    if "members" in after:
        event.members = int(after["members"])
    if row.corrects:
        event.corrects = row.corrects
        if row.corrected_type:
            event.corrected_type = event_types.number(row.corrected_type)
    return event


class Ingester:
    """Moves new journal rows into the log, one source at a time, in chunks."""

    def __init__(
        self,
        journal: Journal,
        store: EventStore,
        catalogue: Catalogue,
        household_of: HouseholdOf,
        *,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.journal = journal
        self.store = store
        self.catalogue = catalogue
        self.bands = catalogue.bands
        self.household_of = household_of
        self.clock = clock
        self.gaps = 0
        self.faults = 0
        self.behind = False  # the last round left rows for the next (a source's cap)

    def run_once(self) -> int:
        """Ingest everything the journals hold beyond the log's heads; how many were added
        (derived events included)."""
        added = 0
        self.behind = False
        heads = self.store.heads()
        for source, top in sorted(self.journal.journal_heads().items()):
            try:
                added += self._source(source, heads.get(source, 0), top)
            except Exception as exc:  # this source waits for the next round; others go on
                self.faults += 1
                log.warning(
                    "event source round failed",
                    extra={"source": source, "error": type(exc).__name__},
                )
        return added

    def _source(self, source: str, head: int, top: int) -> int:
        added = 0
        for chunk in range(CHUNKS_PER_ROUND + 1):
            if head >= top:
                break
            if chunk == CHUNKS_PER_ROUND:
                self.behind = True  # the next round starts at once
                break
            rows = self.journal.journal_after(source, head, CHUNK)
            contiguous = _contiguous(rows, head)
            if len(contiguous) < len(rows) or not rows:
                self._gap(source, head, rows[0].seq if rows else top)
            if not contiguous:
                return added
            events, changes = self._events(contiguous)
            added += self.store.append(events, self.clock(), changes)
            head = contiguous[-1].seq
        return added

    def _events(self, rows: list[JournalRow]) -> tuple[list[NewEvent], list[ActionChange]]:
        """The rows' events, each followed by what it causes: an eligibility change, or,
        where due process applies, a proposed action or its withdrawal (see
        gateway/pipeline/due_process.py); numbered after the derived source's head
        (replicas derive the same numbers from the same rows; the log keeps the first to
        commit), with the actions to write beside them."""
        derived = _Derived(self.store.heads().get(DERIVED, 0), self.clock())
        turned = [(row, consequences.turns(row, self.catalogue)) for row in rows]
        households = [consequences.household_of(r) for r, found in turned if found]
        derived.holding = self.store.holding(households) if households else {}
        for row, found in turned:
            event = self._new(row)
            derived.events.append(event)
            first = len(derived.events)
            for turn in found:
                self._turn(row, event, turn, derived)
            cause = (row.source, row.seq)
            derived.events[first:] = [replace(e, cause=cause) for e in derived.events[first:]]
        return derived.events, derived.changes

    def _turn(self, row: JournalRow, cause: NewEvent, turn: Turn, derived: _Derived) -> None:
        """What one turned decision sends and writes."""
        key = (consequences.household_of(row), turn.programme.code)
        holding = derived.holding.get(key)
        ends = turn.before.eligible and not turn.after.eligible
        step = due_process.on_turn(
            ends=ends, notice_days=turn.programme.notice_days, holding=holding
        )
        if step is Step.NOTHING:
            return
        if step is Step.RELEASE and holding is not None:
            released = replace(holding, state=due_process.RELEASED, resolved_us=derived.now)
            derived.changes.append(ActionChange(row.source, row.seq, released, holding.state))
            derived.holding.pop(key)
            return
        seq = derived.next_seq()
        if step is Step.PROPOSE:
            action = due_process.propose(
                cause=row.event_id,
                household_id=key[0],
                programme=key[1],
                notice_days=turn.programme.notice_days,
                now_us=derived.now,
                reasons=tuple(turn.after.reasons),
                previous_reasons=tuple(turn.before.reasons),
                threshold_version=_version(turn),
            )
            derived.events.append(actions.proposed(action, seq))
            derived.changes.append(ActionChange(DERIVED, seq, action))
            derived.holding[key] = action
        elif step is Step.WITHDRAW and holding is not None:
            because = due_process.withdrawn_because(holding, row.corrects)
            gone = replace(
                holding, state=due_process.WITHDRAWN, resolution=because, resolved_us=derived.now
            )
            derived.events.append(
                actions.withdrawn(gone, because, row.event_id, seq, derived.now, DERIVED)
            )
            derived.changes.append(ActionChange(DERIVED, seq, gone, holding.state))
            derived.holding.pop(key)
        else:
            action_id = ""
            if step is Step.REVERSE and holding is not None:
                reversed_ = replace(holding, state=due_process.REVERSED, resolved_us=derived.now)
                derived.changes.append(ActionChange(DERIVED, seq, reversed_, holding.state))
                derived.holding.pop(key)
                action_id = holding.action_id
            derived.events.append(self._derived(row, cause, turn, seq, action_id))

    def _derived(
        self, row: JournalRow, cause: NewEvent, turn: Turn, seq: int, action_id: str = ""
    ) -> NewEvent:
        threshold = turn.after.threshold
        payload = epb.ChangeEvent(
            event_id=f"{row.event_id}/eligibility/{turn.programme.code}",
            source=DERIVED,
            source_seq=seq,
            type=event_types.number("eligibility.changed"),
            effective=_date(row.effective),
            household_id=consequences.household_of(row),
            programme=turn.programme.code,
            eligible=turn.after.eligible,
            previous_eligible=turn.before.eligible,
            reasons=list(turn.after.reasons),
            previous_reasons=list(turn.before.reasons),
            threshold_version=threshold.version if threshold is not None else "",
            cause=row.event_id,
            action_id=action_id,
        )
        payload.recorded.FromMicroseconds(cause.recorded_us)
        return NewEvent(
            source=DERIVED,
            source_seq=seq,
            event_id=payload.event_id,
            type="eligibility.changed",
            idcs="",
            household_id=consequences.household_of(row),
            recorded_us=cause.recorded_us,
            payload=payload.SerializeToString(),
        )

    def _new(self, row: JournalRow) -> NewEvent:
        household = row.household_id or ""
        if not household and row.idcs:
            household = self.household_of(row.idcs)
        return NewEvent(
            source=row.source,
            source_seq=row.seq,
            event_id=row.event_id,
            type=row.type,
            idcs=row.idcs or "",
            household_id=household,
            recorded_us=_recorded_us(row.recorded),
            payload=change_event(row, household, self.bands).SerializeToString(),
            detail=json.dumps({"before": row.before, "after": row.after}, sort_keys=True),
        )

    def _gap(self, source: str, head: int, found: int) -> None:
        self.gaps += 1
        log.error(
            "event source gap",
            extra={"source": source, "expected_seq": head + 1, "found_seq": found},
        )


class _Derived:
    """What one chunk derives: its events and action changes, the derived source's
    running sequence, and the actions holding benefits as the chunk goes."""

    def __init__(self, seq: int, now: int) -> None:
        self.seq = seq
        self.now = now
        self.events: list[NewEvent] = []
        self.changes: list[ActionChange] = []
        self.holding: dict[tuple[str, str], ProposedAction] = {}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _version(turn: Turn) -> str:
    threshold = turn.after.threshold or turn.before.threshold
    return threshold.version if threshold is not None else ""


def _contiguous(rows: list[JournalRow], head: int) -> list[JournalRow]:
    """The rows that follow `head` without a jump."""
    kept: list[JournalRow] = []
    for row in rows:
        if row.seq != head + 1 + len(kept):
            break
        kept.append(row)
    return kept


# Seconds between two prunings of the log past its retention window.
PRUNE_EVERY_S = 60.0


class Poller:
    """Runs an ingester every `interval` seconds on a thread of its own until closed, and
    prunes the log of events older than `retention_s` about once a minute.

    A round that fails (the store or the registry out of reach) is logged by the
    exception's type only and retried on the next round."""

    def __init__(self, ingester: Ingester, interval: float, retention_s: float) -> None:
        self.ingester = ingester
        self.interval = interval
        self.retention_s = retention_s
        self._pruned_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jisr-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ingester.run_once()
                self._prune()
            except Exception as exc:  # a fault of one round is retried on the next
                log.warning("event ingest round failed", extra={"error": type(exc).__name__})
            if not self.ingester.behind:
                self._stop.wait(self.interval)

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        horizon = self.ingester.clock() - int(self.retention_s * 1_000_000)
        self.ingester.store.prune(horizon)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def household_lookup(conn_of: Callable[[], Any]) -> HouseholdOf:
    """The household of a person in the embedded registry, from its membership table."""

    def household_of(idcs: str) -> str:
        row = conn_of().execute(_HOUSEHOLD_OF, (idcs,)).fetchone()
        return str(row[0]) if row else ""

    return household_of


_HOUSEHOLD_OF = "SELECT household_id FROM membership WHERE idcs = ?"
