"""The embedded registry: one SQLite file holding the RNP, RSU, CNSS and ANSS tables.

Enumerations are stored as the numbers of the jisr.v1 enums and dates as ISO-8601 text,
so rows map onto the wire records without lookup tables. The gateway opens the file
read-only, one connection per thread (sqlite3 connections must not be shared).

Schema 2 adds the change journal (docs/events.md, "The journal"): `jisr registry apply`
changes the file while the gateway reads it, so the file is in WAL journal mode (set by
its writers, persistent in the file): readers never block the writer, and each read sees
the last commit. Schema 1 files (no journal) are still read.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.type.date_pb2 import Date

SCHEMA_VERSION = 2
# The registries whose changes the journal records, each with its own seq.
JOURNAL_SOURCES = ("RNP", "RSU", "CNSS")
# Versions the gateway reads: a schema-1 file simply has no journal.
READABLE_VERSIONS = (1, 2)

# The journal (docs/events.md). WITHOUT ROWID: the primary key (source, seq) is the
# table's own order, so "the events of a source after seq N" is one range scan, no lookup.
# The partial indexes serve corrections ("did a later event change this record?", "was
# this event corrected already?"); rows without the column cost them nothing.
JOURNAL_SCHEMA = """
CREATE TABLE change_journal (
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    effective TEXT NOT NULL,
    recorded TEXT NOT NULL,
    idcs TEXT,
    household_id TEXT,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    corrects TEXT,
    facts TEXT,
    PRIMARY KEY (source, seq)
) WITHOUT ROWID;
CREATE INDEX change_journal_by_idcs ON change_journal (idcs) WHERE idcs IS NOT NULL;
CREATE INDEX change_journal_by_household ON change_journal (household_id)
    WHERE household_id IS NOT NULL;
CREATE INDEX change_journal_by_corrects ON change_journal (corrects)
    WHERE corrects IS NOT NULL;
"""

SCHEMA = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE person (
    idcs TEXT PRIMARY KEY,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    sex INTEGER NOT NULL,
    birth_date TEXT NOT NULL,
    civil_status INTEGER NOT NULL,
    vital_status INTEGER NOT NULL,
    death_date TEXT
) WITHOUT ROWID;
CREATE TABLE household (
    household_id TEXT PRIMARY KEY,
    region INTEGER NOT NULL,
    area INTEGER NOT NULL,
    score REAL NOT NULL,
    registered_on TEXT NOT NULL,
    scored_on TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE membership (
    idcs TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    relationship INTEGER NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE coverage (
    idcs TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    since TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE enrolment (
    household_id TEXT NOT NULL,
    programme TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (household_id, programme)
) WITHOUT ROWID;
"""
    + JOURNAL_SCHEMA
)

# Built after bulk loading: cheaper than maintaining them row by row.
INDEXES = """
CREATE INDEX membership_by_household ON membership (household_id, position, idcs, relationship);
"""

REGISTRY_FILE = "registry.sqlite"
# Reads through a memory map: no read() syscall per page, one copy shared by all threads.
MMAP_BYTES = 1 << 34


class RegistryError(Exception):
    """The registry file does not exist or is not a Jisr registry."""


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One row of the change journal, `before` and `after` parsed.

    `corrected_type` is not a column: for a correction, the type of the event it undoes
    (read from that event's row), which a subscriber is told; None otherwise."""

    source: str
    seq: int
    event_id: str
    type: str
    effective: str
    recorded: str
    idcs: str | None
    household_id: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    corrects: str | None
    corrected_type: str | None
    # For a change that may turn an eligibility decision: the household's facts right
    # after it ({"household_id", "score", "schemes", "person_scheme"}), else None.
    facts: dict[str, Any] | None = None


_JOURNAL_AFTER = """
SELECT j.source, j.seq, j.event_id, j.type, j.effective, j.recorded, j.idcs, j.household_id,
       j.before, j.after, j.corrects, c.type, j.facts
FROM change_journal j LEFT JOIN change_journal c ON c.event_id = j.corrects
WHERE j.source = ? AND j.seq > ? ORDER BY j.seq LIMIT ?
"""


def iso_to_date(text: str | None) -> Date | None:
    """google.type.Date from 'YYYY-MM-DD' text, None for NULL.

    The message is shared between the records of the same day (a batch builds thousands
    of records from a few thousand distinct days, and a Date costs as much to build as
    the rest of a record): every caller passes it to a message constructor or `add`,
    which copy it. Never mutate what this returns."""
    if text is None:
        return None
    return _date(text)


@functools.lru_cache(maxsize=1 << 16)
def _date(text: str) -> Date:
    return Date(year=int(text[0:4]), month=int(text[5:7]), day=int(text[8:10]))


def chunks(keys: Sequence[str], size: int = 900) -> Iterator[Sequence[str]]:
    """Slices small enough for one `IN (...)` list."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def placeholders(n: int) -> str:
    """'?,?,...' for n parameters."""
    return ",".join("?" * n)


class Registry:
    """Read-only access to a registry file, one connection per calling thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise RegistryError(f"{path}: no registry file (run `jisr demo-data`)")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        version = (
            self.connection()
            .execute("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetchone()
        )
        if version is None or int(version[0]) not in READABLE_VERSIONS:
            found = "none" if version is None else version[0]
            raise RegistryError(
                f"{path}: registry schema {found} is not one of {READABLE_VERSIONS}"
            )

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        Read-only but not `immutable`: the file changes under the gateway (`jisr registry
        apply`), and an immutable reader would keep stale pages. In WAL mode a reader needs
        the `-shm` file beside the registry: the data directory must be writable by the
        gateway, or the file's writer must be running (docs/registry-data.md)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
                conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
                conn.execute("SELECT value FROM meta LIMIT 1")
            except sqlite3.DatabaseError as exc:
                raise RegistryError(f"{self.path}: not a readable registry ({exc})") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def meta(self) -> dict[str, str]:
        """The generator's description of the data (seed, counts, synthetic flag)."""
        return dict(self.connection().execute("SELECT key, value FROM meta").fetchall())

    def journal_after(self, source: str, seq: int, limit: int) -> list[JournalRow]:
        """The journal rows of `source` after `seq`, in order, at most `limit`: what the
        gateway ingests next. Empty for a schema-1 file (no journal yet)."""
        conn = self.connection()
        if not _has_journal(conn):
            return []
        rows = conn.execute(_JOURNAL_AFTER, (source, seq, limit)).fetchall()
        return [_journal_row(row) for row in rows]

    def journal_heads(self) -> dict[str, int]:
        """The highest seq of each source with a journal row (sources without any are
        absent): the gateway compares them with what it ingested."""
        conn = self.connection()
        if not _has_journal(conn):
            return {}
        heads = {}
        for source in JOURNAL_SOURCES:  # one probe of the primary key each, not a scan
            row = conn.execute(
                "SELECT max(seq) FROM change_journal WHERE source = ?", (source,)
            ).fetchone()
            if row[0] is not None:
                heads[source] = int(row[0])
        return heads

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _journal_row(row: tuple[Any, ...]) -> JournalRow:
    source, seq, event_id, type_, effective, recorded, idcs, household_id = row[:8]
    return JournalRow(
        source=source,
        seq=seq,
        event_id=event_id,
        type=type_,
        effective=effective,
        recorded=recorded,
        idcs=idcs,
        household_id=household_id,
        before=json.loads(row[8]),
        after=json.loads(row[9]),
        corrects=row[10],
        corrected_type=row[11],
        facts=json.loads(row[12]) if row[12] else None,
    )


def _has_journal(conn: sqlite3.Connection) -> bool:
    """Whether the file has the journal: asked at each read, because `jisr registry apply`
    may upgrade a schema-1 file while the gateway runs."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'change_journal'"
    ).fetchone()
    return row is not None
