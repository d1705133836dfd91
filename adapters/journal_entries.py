"""A change journal over the wire: a registry's journal row as a MinistryBackend
`JournalEntry` (the backend's side) and back, checked against the contract (the
gateway's side: the entry comes from another institution's system).

A row the gateway cannot read must never reach the event log: a malformed date, an
unknown type, a score that is not a number, an id the gateway would derive from. The
check refuses the whole read (AdapterError, `invalid`), naming the source, the sequence
number and the field, never a value: the ingester then stops taking that source at that
entry, as at a gap, and the other sources go on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from adapters.base import AdapterError
from adapters.change_lines import COMPOSITION_CHANGED, SOURCE_OF, TYPES
from adapters.registry_db import JournalRow
from gateway.pb.jisr.v1 import backend_pb2

# Types a source journals (a change line's, and the registry's composition rows).
SOURCE_TYPES = frozenset({*TYPES, COMPOSITION_CHANGED})
MAX_ID = 128


def to_entry(row: JournalRow) -> backend_pb2.JournalEntry:
    """The wire form of a journal row (the backend's side)."""
    return backend_pb2.JournalEntry(
        source=row.source,
        seq=row.seq,
        event_id=row.event_id,
        type=row.type,
        effective=row.effective,
        recorded=row.recorded,
        idcs=row.idcs or "",
        household_id=row.household_id or "",
        before_json=json.dumps(row.before, sort_keys=True),
        after_json=json.dumps(row.after, sort_keys=True),
        corrects=row.corrects or "",
        corrected_type=row.corrected_type or "",
        facts_json=json.dumps(row.facts, sort_keys=True) if row.facts is not None else "",
    )


def from_entry(entry: backend_pb2.JournalEntry, source: str) -> JournalRow:
    """The journal row of an entry read from `source`'s backend; AdapterError (invalid)
    naming the field at fault when it breaks the contract."""

    def bad(field: str, why: str) -> AdapterError:
        return AdapterError(source, f"journal entry {entry.seq}: {field} {why}", invalid=True)

    problem = _header_problem(entry, source) or _correction_problem(entry, source)
    if problem is not None:
        raise bad(*problem)
    before = _object(entry.before_json)
    after = _object(entry.after_json)
    if before is None or after is None:
        raise bad("before_json" if before is None else "after_json", "is not a JSON object")
    facts = _facts(entry.facts_json) if entry.facts_json else None
    if entry.facts_json and facts is None:
        raise bad("facts_json", "is not household facts")
    if facts is not None and entry.household_id and facts["household_id"] != entry.household_id:
        raise bad("facts_json", "are about another household than the entry")
    correction = entry.type == "correction"
    return JournalRow(
        source=entry.source,
        seq=entry.seq,
        event_id=entry.event_id,
        type=entry.type,
        effective=entry.effective,
        recorded=entry.recorded,
        idcs=entry.idcs or None,
        household_id=entry.household_id or None,
        before=before,
        after=after,
        corrects=entry.corrects or None,
        corrected_type=(entry.corrected_type or None) if correction else None,
        facts=facts,
    )


def _header_problem(entry: backend_pb2.JournalEntry, source: str) -> tuple[str, str] | None:
    """(field, why) of the first fault among the entry's identifying fields."""
    checks = (
        (entry.source == source, "source", "is not the source asked for"),
        (entry.seq >= 1, "seq", "must be 1 or more"),
        (
            _identifier(entry.event_id) and "/" not in entry.event_id,
            "event_id",
            f"must be 1 to {MAX_ID} printable characters without '/'",
        ),
        (entry.type in SOURCE_TYPES, "type", "is not a change type"),
        (
            SOURCE_OF.get(entry.type) in (None, source),
            "type",
            "is not a change this source records",
        ),
        (_date(entry.effective), "effective", "is not an ISO date"),
        (_instant(entry.recorded), "recorded", "is not an RFC 3339 time with its offset"),
        (not entry.idcs or _identifier(entry.idcs), "idcs", "is not an identifier"),
        (
            not entry.household_id or _identifier(entry.household_id),
            "household_id",
            "is not an identifier",
        ),
    )
    return next(((field, why) for ok, field, why in checks if not ok), None)


def _correction_problem(entry: backend_pb2.JournalEntry, source: str) -> tuple[str, str] | None:
    if entry.type != "correction":
        return None
    if (
        _identifier(entry.corrects)
        and entry.corrected_type in SOURCE_TYPES
        and SOURCE_OF.get(entry.corrected_type) in (None, source)
    ):
        return None
    return "corrects", "and corrected_type must name a change of this source undone"


def _identifier(text: str) -> bool:
    return 0 < len(text) <= MAX_ID and text.isprintable() and not any(c.isspace() for c in text)


def _date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _instant(text: str) -> bool:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when.tzinfo is not None


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _facts(text: str) -> dict[str, Any] | None:
    """Facts as adapters/registry_changes.py writes them, or None if they are not."""
    facts = _object(text)
    if facts is None:
        return None
    score, schemes, living = facts.get("score"), facts.get("schemes"), facts.get("living")
    own, alive = facts.get("person_scheme"), facts.get("person_alive")
    checks = (
        isinstance(facts.get("household_id"), str) and _identifier(facts["household_id"]),
        isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score),
        isinstance(schemes, list) and all(isinstance(s, str) for s in schemes),
        living is None
        or (isinstance(living, int) and not isinstance(living, bool) and living >= 0),
        own is None or isinstance(own, str),
        alive is None or isinstance(alive, bool),
    )
    return facts if all(checks) else None
