"""`jisr registry apply`: a file of changes applied to the embedded registry, each change
journaled beside it (docs/events.md, "A file of changes" and "The journal").

The whole file is one transaction: a line is checked against the registry as the lines
before it left it, so the applier writes each valid line at once and reads its own
writes; if any line is wrong, everything is rolled back and the wrong lines are reported.
Lines are streamed, and nothing is remembered per line in Python: what the file changed
is in the transaction, so memory does not grow with the file.

Speed (1,000,000 lines in under a minute, bench/registry_apply.py) comes from one
transaction, statements SQLite prepares once and reuses, and a handful of indexed reads
and writes per line. Errors name the line and member, never a value (adapters/change_lines.py).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from adapters.change_lines import (
    AREAS,
    COMPOSITION_CHANGED,
    REGIONS,
    RELATIONSHIPS,
    SEXES,
    Change,
    Correction,
    CoverageEnded,
    CoverageStarted,
    HouseholdRegionChanged,
    HouseholdRescored,
    LineError,
    MemberJoined,
    MemberLeft,
    PersonBorn,
    PersonDied,
    parse_line,
    subject,
)
from adapters.registry_db import JOURNAL_SCHEMA, JOURNAL_SOURCES, RegistryError
from gateway.pb.jisr.v1 import records_pb2 as rec

PROGRESS_EVERY = 100_000
MAX_SHOWN = 20  # wrong lines reported one by one; the rest are counted
MAX_LINE_BYTES = 64 * 1024  # far above any valid line; keeps a broken file's memory bounded
# A household's members at most, as adapters/record_checks.py accepts from a backend.
MAX_MEMBERS = 50
BUSY_TIMEOUT_S = 5.0
# SQLite's page cache for the apply: the transaction's dirty pages stay in memory up to
# this, then spill to the WAL. Bounded, so memory stays flat however long the file is.
CACHE_KIB = 64 * 1024
COMPOSITION_SUFFIX = "/composition"

_ALIVE = int(rec.VITAL_STATUS_ALIVE)
_DECEASED = int(rec.VITAL_STATUS_DECEASED)
_SINGLE = int(rec.CIVIL_STATUS_SINGLE)
_DECLARANT = int(rec.RELATIONSHIP_DECLARANT)
# Registry numbers -> the file's words, which the journal's before/after use.
_VITAL_NAMES = {_ALIVE: "ALIVE", _DECEASED: "DECEASED"}
_CIVIL_NAMES = {n: k.removeprefix("CIVIL_STATUS_") for k, n in rec.CivilStatus.items()}
_SEX_NAMES = {n: k for k, n in SEXES.items()}
_RELATIONSHIP_NAMES = {**{n: k for k, n in RELATIONSHIPS.items()}, _DECLARANT: "DECLARANT"}
_REGION_NAMES = {n: k for k, n in REGIONS.items()}
_AREA_NAMES = {n: k for k, n in AREAS.items()}
_VITAL = {k: n for n, k in _VITAL_NAMES.items()}
_CIVIL = {k: n for n, k in _CIVIL_NAMES.items()}
_RELATIONSHIP = {k: n for n, k in _RELATIONSHIP_NAMES.items()}

# Which record an event changes, for "a later event changed the same record": the family
# of its type and the journal column that keys the record.
_FAMILY = {
    "person.died": ("person", "idcs"),
    "person.born": ("person", "idcs"),
    "member.joined": ("membership", "idcs"),
    "member.left": ("membership", "idcs"),
    "household.rescored": ("household", "household_id"),
    "household.region_changed": ("household", "household_id"),
    "coverage.started": ("coverage", "idcs"),
    "coverage.ended": ("coverage", "idcs"),
}

_INSERT_JOURNAL = "INSERT INTO change_journal VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
# Changes that may turn a household's eligibility (its score, its members' coverage): the
# journal keeps the household's facts right after each, so a reader judges the decision
# before and after exactly, in the order the changes were made (docs/events.md).
TURNING = frozenset(
    {
        "household.rescored",
        "coverage.started",
        "coverage.ended",
        "member.joined",
        "member.left",
        "person.died",
    }
)
# Changes after which the facts also count the household's living members, and say
# whether the person is alive: a death or a departure can leave it with none, which ends
# its benefits (gateway/pipeline/due_process.py); an arrival can bring someone back.
EMPTYING = frozenset({"member.left", "person.died", "member.joined"})

# The household's facts in one statement (the apply runs it for most lines): the
# household named, or else the person's; its score, its members' schemes, the person's
# own scheme, and (when asked) its living members.
_FACTS = """SELECT h.household_id, h.score,
    (SELECT group_concat(c.scheme, '|') FROM membership m JOIN coverage c ON c.idcs = m.idcs
        WHERE m.household_id = h.household_id),
    (SELECT scheme FROM coverage WHERE idcs = :idcs),
    CASE WHEN :living THEN (SELECT count(*) FROM membership m JOIN person p ON p.idcs = m.idcs
        WHERE m.household_id = h.household_id AND p.vital_status <> {deceased}) END,
    CASE WHEN :living THEN (SELECT vital_status <> {deceased} FROM person WHERE idcs = :idcs) END
FROM household h
WHERE h.household_id = coalesce(:household,
    (SELECT household_id FROM membership WHERE idcs = :idcs))"""
_FACTS_SQL = _FACTS.format(deceased=_DECEASED)
_JOURNAL_BY_ID = (
    "SELECT source, seq, type, effective, idcs, household_id, before, after, corrects"
    " FROM change_journal WHERE event_id = ?"
)
# Later rows about the same key, with what a correction among them corrected, and whether
# each was itself corrected. `{key}` is idcs or household_id (both have an index).
_LATER = """
SELECT j.type, c.type, c.seq,
       EXISTS (SELECT 1 FROM change_journal k WHERE k.corrects = j.event_id)
FROM change_journal j LEFT JOIN change_journal c ON c.event_id = j.corrects
WHERE j.{key} = ? AND j.source = ? AND j.seq > ?
"""
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class BadLine:
    """A wrong line: its number (from 1), the member at fault, what is wrong."""

    line: int
    member: str
    message: str


class InvalidFileError(Exception):
    """The file has wrong lines; nothing was applied. `shown`: the first MAX_SHOWN."""

    def __init__(self, shown: list[BadLine], count: int, lines: int) -> None:
        super().__init__(f"{count} wrong line(s) of {lines}; nothing applied")
        self.shown = shown
        self.count = count
        self.lines = lines


@dataclass
class Summary:
    """What an apply did: journal rows written per (source, type), lines skipped as
    already applied, whether the file was upgraded from schema 1."""

    lines: int = 0
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: int = 0
    upgraded: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _Event:
    """A journal row of this registry, as read back for idempotence and corrections."""

    source: str
    seq: int
    type: str
    effective: str
    idcs: str | None
    household_id: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    corrects: str | None


def read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream, each cut at MAX_LINE_BYTES + 1 bytes (the applier
    refuses such a line): one endless line cannot fill memory."""
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(MAX_LINE_BYTES)
        yield raw


def apply_changes(
    registry: Path,
    lines: Iterable[bytes | str],
    *,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> Summary:
    """Apply every line to the registry file in one transaction, or none.

    Raises InvalidFileError (nothing applied) when any line is wrong, RegistryError when
    the file is not a registry this code can write or another writer holds it.
    `progress(lines_read)` is called every PROGRESS_EVERY lines; `now` is the recorded
    time (default: the clock)."""
    started = time.perf_counter()
    recorded = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = _open_writer(registry)
    try:
        _begin(conn, registry)
        summary = Summary(upgraded=_upgrade(conn, registry))
        applier = _Applier(conn, recorded, summary)
        shown: list[BadLine] = []
        wrong = 0
        for number, raw in enumerate(lines, 1):
            summary.lines = number
            if progress is not None and number % PROGRESS_EVERY == 0:
                progress(number)
            try:
                applier.line(raw)
            except LineError as exc:
                wrong += 1
                if len(shown) < MAX_SHOWN:
                    shown.append(BadLine(number, exc.member, exc.message))
        if wrong:
            raise InvalidFileError(shown, wrong, summary.lines)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _open_writer(registry: Path) -> sqlite3.Connection:
    """A read-write connection that never creates a file, the registry in WAL mode."""
    if not registry.is_file():
        raise RegistryError(f"{registry}: no registry file (run `jisr demo-data`)")
    try:
        conn = sqlite3.connect(
            f"file:{registry}?mode=rw", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"{registry}: not a writable registry ({exc})") from exc
    return conn


def _begin(conn: sqlite3.Connection, registry: Path) -> None:
    """Take the write lock now: a second apply waits BUSY_TIMEOUT_S, then gives up."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise RegistryError(f"{registry}: busy, another apply is writing ({exc})") from exc


def _upgrade(conn: sqlite3.Connection, registry: Path) -> bool:
    """Bring a schema-1 file to schema 2 (add the journal) inside the apply's transaction,
    so a refused file leaves it as it was. True if it was upgraded."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"{registry}: not a registry ({exc})") from exc
    version = None if row is None else row[0]
    if version == "2":
        return False
    if version != "1":
        raise RegistryError(f"{registry}: registry schema {version} is not 1 or 2")
    for statement in JOURNAL_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    return True


class _Applier:
    """Checks and applies one line at a time inside the open transaction."""

    def __init__(self, conn: sqlite3.Connection, recorded: str, summary: Summary) -> None:
        self.conn = conn
        self.recorded = recorded
        self.summary = summary
        self.seq = {source: self._head(source) for source in JOURNAL_SOURCES}
        self.handlers: dict[type[Any], Callable[[Any], None]] = {
            PersonDied: self.person_died,
            PersonBorn: self.person_born,
            MemberJoined: self.member_joined,
            MemberLeft: self.member_left,
            HouseholdRescored: self.household_rescored,
            HouseholdRegionChanged: self.household_region_changed,
            CoverageStarted: self.coverage_started,
            CoverageEnded: self.coverage_ended,
            Correction: self.correction,
        }

    def _head(self, source: str) -> int:
        row = self.conn.execute(
            "SELECT max(seq) FROM change_journal WHERE source = ?", (source,)
        ).fetchone()
        return int(row[0] or 0)

    # --- a line ---------------------------------------------------------------------

    def line(self, raw: bytes | str) -> None:
        """Check one line and apply it, or raise LineError (having written nothing)."""
        if isinstance(raw, bytes):
            if len(raw) > MAX_LINE_BYTES:
                raise LineError("line", f"longer than {MAX_LINE_BYTES // 1024} KiB")
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise LineError("line", "not UTF-8 text") from None
        if not raw or raw.isspace():
            return  # a blank line says nothing
        change = parse_line(raw)
        known = self.event(change.id)
        if known is not None:
            if not _same_content(change, known):
                raise LineError("id", "already in the journal with other content")
            self.summary.skipped += 1
            return
        self.handlers[type(change)](change)

    def event(self, event_id: str) -> _Event | None:
        row = self.conn.execute(_JOURNAL_BY_ID, (event_id,)).fetchone()
        if row is None:
            return None
        source, seq, type_, effective, idcs, household_id, before, after, corrects = row
        return _Event(
            source=source,
            seq=seq,
            type=type_,
            effective=effective,
            idcs=idcs,
            household_id=household_id,
            before=json.loads(before),
            after=json.loads(after),
            corrects=corrects,
        )

    def journal(
        self,
        change: Change,
        type_: str,
        about: tuple[str | None, str | None],
        before: dict[str, Any],
        after: dict[str, Any],
        *,
        event_id: str | None = None,
        corrects: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Write one journal row with the source's next seq; `about` is its (idcs,
        household_id), None where the event names none; `kind` the type of change it
        makes (a correction's: the type it undoes), for the household facts it keeps."""
        source = change.source
        seq = self.seq[source] + 1
        self.seq[source] = seq
        self.conn.execute(
            _INSERT_JOURNAL,
            (
                source,
                seq,
                event_id or change.id,
                type_,
                change.effective,
                self.recorded,
                *about,
                _dumps(before),
                _dumps(after),
                corrects,
                self.facts(*about, kind or type_) if (kind or type_) in TURNING else None,
            ),
        )
        self.summary.applied[(source, type_)] += 1

    def facts(self, idcs: str | None, household_id: str | None, kind: str) -> str | None:
        """The household's score and covered members' schemes as they now stand, and the
        person's own scheme (after a death or a departure, its living members too): JSON,
        None when the change concerns no household."""
        if household_id is None and idcs is None:
            return None
        living = kind in EMPTYING
        row = self.conn.execute(
            _FACTS_SQL, {"idcs": idcs, "household": household_id, "living": living}
        ).fetchone()
        if row is None:
            return None
        found, score, schemes, own, alive, person_alive = row
        facts: dict[str, Any] = {
            "household_id": found,
            "score": score,
            "schemes": sorted(schemes.split("|")) if schemes else [],
        }
        if living:
            facts["living"] = alive
            facts["person_alive"] = bool(person_alive)
        return str(_dumps({**facts, "person_scheme": own}))

    def composition(self, change: Change, household_id: str, before: int, after: int) -> None:
        """The household's member count, journaled by the registry beside a membership
        change, with an id derived from the line's (ids of lines cannot contain '/')."""
        self.journal(
            change,
            COMPOSITION_CHANGED,
            (None, household_id),
            {"members": before},
            {"members": after},
            event_id=change.id + COMPOSITION_SUFFIX,
        )

    # --- the registry's records, in the journal's words ----------------------------------

    def person(self, idcs: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT given_name, family_name, sex, birth_date, civil_status, vital_status,"
            " death_date FROM person WHERE idcs = ?",
            (idcs,),
        ).fetchone()
        if row is None:
            return None
        given, family, sex, born, civil, vital, died = row
        return {
            "given_name": given,
            "family_name": family,
            "sex": _SEX_NAMES.get(sex),
            "birth_date": born,
            "civil_status": _CIVIL_NAMES.get(civil),
            "vital_status": _VITAL_NAMES.get(vital),
            "death_date": died,
        }

    def membership(self, idcs: str) -> dict[str, Any]:
        """The person's membership; every value None when in no household."""
        row = self.conn.execute(
            "SELECT household_id, relationship, position FROM membership WHERE idcs = ?",
            (idcs,),
        ).fetchone()
        if row is None:
            return {"household_id": None, "relationship": None, "position": None}
        return {
            "household_id": row[0],
            "relationship": _RELATIONSHIP_NAMES.get(row[1]),
            "position": row[2],
        }

    def household(self, household_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT region, area, score, scored_on FROM household WHERE household_id = ?",
            (household_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "region": _REGION_NAMES.get(row[0]),
            "area": _AREA_NAMES.get(row[1]),
            "score": row[2],
            "scored_on": row[3],
        }

    def coverage(self, idcs: str) -> dict[str, Any]:
        """The person's coverage; every value None when not covered."""
        row = self.conn.execute("SELECT scheme, since FROM coverage WHERE idcs = ?", (idcs,))
        found = row.fetchone()
        if found is None:
            return {"scheme": None, "since": None}
        return {"scheme": found[0], "since": found[1]}

    def members(self, household_id: str) -> tuple[int, int]:
        """(member count, highest position) of a household; (0, -1) if none."""
        count, top = self.conn.execute(
            "SELECT count(*), max(position) FROM membership WHERE household_id = ?",
            (household_id,),
        ).fetchone()
        return int(count), -1 if top is None else int(top)

    def living(self, idcs: str) -> dict[str, Any]:
        person = self.person(idcs)
        if person is None:
            raise LineError("idcs", "no such person in the registry")
        if person["vital_status"] != "ALIVE":
            raise LineError("idcs", "the person is deceased")
        return person

    def existing_household(self, household_id: str) -> dict[str, Any]:
        found = self.household(household_id)
        if found is None:
            raise LineError("household_id", "no such household in the registry")
        return found

    # --- each type ------------------------------------------------------------------------

    def person_died(self, change: PersonDied) -> None:
        person = self.living(change.idcs)
        before = {"vital_status": person["vital_status"], "death_date": person["death_date"]}
        after = {"vital_status": "DECEASED", "death_date": change.effective}
        self.conn.execute(
            "UPDATE person SET vital_status = ?, death_date = ? WHERE idcs = ?",
            (_DECEASED, change.effective, change.idcs),
        )
        self.journal(change, change.TYPE, (change.idcs, None), before, after)

    def person_born(self, change: PersonBorn) -> None:
        if self.person(change.idcs) is not None:
            raise LineError("idcs", "already in the registry (a birth is a new person)")
        self.conn.execute(
            "INSERT INTO person VALUES (?,?,?,?,?,?,?,NULL)",
            (
                change.idcs,
                change.given_name,
                change.family_name,
                SEXES[change.sex],
                change.effective,
                _SINGLE,
                _ALIVE,
            ),
        )
        after = {
            **change.payload(),
            "birth_date": change.effective,
            "civil_status": "SINGLE",
            "vital_status": "ALIVE",
            "death_date": None,
        }
        self.journal(change, change.TYPE, (change.idcs, None), {}, after)

    def member_joined(self, change: MemberJoined) -> None:
        self.living(change.idcs)
        before = self.membership(change.idcs)
        if before["household_id"] is not None:
            raise LineError("idcs", "the person is in a household already (member.left first)")
        self.existing_household(change.household_id)
        count, top = self.members(change.household_id)
        if count >= MAX_MEMBERS:
            raise LineError("household_id", f"the household has {MAX_MEMBERS} members already")
        position = top + 1
        self.conn.execute(
            "INSERT INTO membership VALUES (?,?,?,?)",
            (change.idcs, change.household_id, RELATIONSHIPS[change.relationship], position),
        )
        after = {
            "household_id": change.household_id,
            "relationship": change.relationship,
            "position": position,
        }
        self.journal(change, change.TYPE, (change.idcs, change.household_id), before, after)
        self.composition(change, change.household_id, count, count + 1)

    def member_left(self, change: MemberLeft) -> None:
        before = self.membership(change.idcs)
        if before["household_id"] is None:
            raise LineError("idcs", "the person is in no household")
        if before["household_id"] != change.household_id:
            raise LineError("household_id", "not the household the person is in")
        if before["relationship"] == "DECLARANT":
            raise LineError("idcs", "the declarant cannot leave the household")
        count, _ = self.members(change.household_id)
        self.conn.execute("DELETE FROM membership WHERE idcs = ?", (change.idcs,))
        after = {"household_id": None, "relationship": None, "position": None}
        self.journal(change, change.TYPE, (change.idcs, change.household_id), before, after)
        self.composition(change, change.household_id, count, count - 1)

    def household_rescored(self, change: HouseholdRescored) -> None:
        found = self.existing_household(change.household_id)
        before = {"score": found["score"], "scored_on": found["scored_on"]}
        after = {"score": change.score, "scored_on": change.effective}
        self.conn.execute(
            "UPDATE household SET score = ?, scored_on = ? WHERE household_id = ?",
            (change.score, change.effective, change.household_id),
        )
        self.journal(change, change.TYPE, (None, change.household_id), before, after)

    def household_region_changed(self, change: HouseholdRegionChanged) -> None:
        found = self.existing_household(change.household_id)
        before = {"region": found["region"], "area": found["area"]}
        self.conn.execute(
            "UPDATE household SET region = ?, area = ? WHERE household_id = ?",
            (REGIONS[change.region], AREAS[change.area], change.household_id),
        )
        self.journal(change, change.TYPE, (None, change.household_id), before, change.payload())

    def coverage_started(self, change: CoverageStarted) -> None:
        self.living(change.idcs)
        before = self.coverage(change.idcs)
        if before["scheme"] is not None:
            raise LineError("idcs", "the person is covered already (coverage.ended first)")
        self.conn.execute(
            "INSERT INTO coverage VALUES (?,?,?)", (change.idcs, change.scheme, change.effective)
        )
        after = {"scheme": change.scheme, "since": change.effective}
        self.journal(change, change.TYPE, (change.idcs, None), before, after)

    def coverage_ended(self, change: CoverageEnded) -> None:
        before = self.coverage(change.idcs)
        if before["scheme"] is None:
            raise LineError("idcs", "the person has no coverage")
        self.conn.execute("DELETE FROM coverage WHERE idcs = ?", (change.idcs,))
        after = {"scheme": None, "since": None}
        self.journal(change, change.TYPE, (change.idcs, None), before, after)

    # --- corrections ---------------------------------------------------------------------

    def correction(self, change: Correction) -> None:
        """Put back what the corrected event replaced, after the spec's refusals: an event
        of another source, a correction, one corrected already, one whose record a later
        event changed, one whose record no longer holds what it put."""
        target = self.event(change.corrects)
        if target is None or target.type == COMPOSITION_CHANGED:
            raise LineError("corrects", "no event with this id in the journal")
        if target.source != change.source:
            raise LineError("corrects", "an event of another source")
        if target.type == Correction.TYPE:
            raise LineError("corrects", "a correction cannot be corrected")
        if self.conn.execute(
            "SELECT 1 FROM change_journal WHERE corrects = ?", (change.corrects,)
        ).fetchone():
            raise LineError("corrects", "the event was corrected already")
        if self.changed_later(target):
            raise LineError(
                "corrects", "a later event changed the same record: correct that one first"
            )
        if self.current(target) != target.after:
            raise LineError("corrects", "the record no longer holds what the event put")
        self.undo(change, target)
        self.journal(
            change,
            change.TYPE,
            (target.idcs, target.household_id),
            target.after,
            target.before,
            corrects=change.corrects,
            kind=target.type,
        )
        if target.type in (MemberJoined.TYPE, MemberLeft.TYPE):
            assert target.household_id is not None  # membership events name their household
            count, _ = self.members(target.household_id)
            delta = -1 if target.type == MemberJoined.TYPE else 1
            self.composition(change, target.household_id, count - delta, count)

    def changed_later(self, target: _Event) -> bool:
        """Whether an event after `target`, of its source and about its record, still
        stands: an event later corrected, or the correction of an event after `target`,
        does not count (undoing them left the record as `target` put it)."""
        family, key = _FAMILY[target.type]
        value = target.idcs if key == "idcs" else target.household_id
        rows = self.conn.execute(_LATER.format(key=key), (value, target.source, target.seq))
        for type_, corrected_type, corrected_seq, was_corrected in rows:
            if type_ == COMPOSITION_CHANGED or was_corrected:
                continue
            if type_ == Correction.TYPE and corrected_seq > target.seq:
                continue
            undone = corrected_type if type_ == Correction.TYPE else type_
            if _FAMILY[undone][0] == family:
                return True
        return False

    def current(self, target: _Event) -> dict[str, Any]:
        """The record's values now, under the keys of the event's `after`."""
        family, _ = _FAMILY[target.type]
        now: dict[str, Any] | None
        if family == "person":
            now = self.person(target.idcs or "")
        elif family == "membership":
            now = self.membership(target.idcs or "")
        elif family == "household":
            now = self.household(target.household_id or "")
        else:
            now = self.coverage(target.idcs or "")
        return {key: (now or {}).get(key) for key in target.after}

    def undo(self, change: Correction, target: _Event) -> None:
        """Write back `target.before`; refused (LineError, nothing written) for a birth
        whose person has since joined a household or been covered."""
        b, idcs, hid = target.before, target.idcs, target.household_id
        execute = self.conn.execute
        if target.type == PersonDied.TYPE:
            execute(
                "UPDATE person SET vital_status = ?, death_date = ? WHERE idcs = ?",
                (_VITAL[b["vital_status"]], b["death_date"], idcs),
            )
        elif target.type == PersonBorn.TYPE:
            assert idcs is not None
            if self.membership(idcs)["household_id"] or self.coverage(idcs)["scheme"]:
                raise LineError(
                    "corrects", "the person has since joined a household or been covered"
                )
            execute("DELETE FROM person WHERE idcs = ?", (idcs,))
        elif target.type == MemberJoined.TYPE:
            execute("DELETE FROM membership WHERE idcs = ?", (idcs,))
        elif target.type == MemberLeft.TYPE:
            relationship = _RELATIONSHIP[b["relationship"]]
            execute(
                "INSERT INTO membership VALUES (?,?,?,?)",
                (idcs, b["household_id"], relationship, b["position"]),
            )
        elif target.type == HouseholdRescored.TYPE:
            execute(
                "UPDATE household SET score = ?, scored_on = ? WHERE household_id = ?",
                (b["score"], b["scored_on"], hid),
            )
        elif target.type == HouseholdRegionChanged.TYPE:
            execute(
                "UPDATE household SET region = ?, area = ? WHERE household_id = ?",
                (REGIONS[b["region"]], AREAS[b["area"]], hid),
            )
        elif target.type == CoverageStarted.TYPE:
            execute("DELETE FROM coverage WHERE idcs = ?", (idcs,))
        else:  # coverage.ended
            execute("INSERT INTO coverage VALUES (?,?,?)", (idcs, b["scheme"], b["since"]))


def _same_content(change: Change, known: _Event) -> bool:
    """Whether a line says what the journal row of its id says: the same source, type,
    date, subject (a correction's is the corrected event's, so its `corrects` stands for
    it) and members."""
    if (known.source, known.type, known.effective) != (
        change.source,
        change.TYPE,
        change.effective,
    ):
        return False
    if isinstance(change, Correction):
        return known.corrects == change.corrects
    if (known.idcs, known.household_id) != subject(change):
        return False
    return all(known.after.get(key) == value for key, value in change.payload().items())
