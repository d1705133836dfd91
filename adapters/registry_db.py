"""The embedded registry: one SQLite file holding the RNP, RSU, CNSS and ANSS tables.

Enumerations are stored as the numbers of the jisr.v1 enums and dates as ISO-8601 text,
so rows map onto the wire records without lookup tables. The gateway opens the file
read-only, one connection per thread (sqlite3 connections must not be shared).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.type.date_pb2 import Date

SCHEMA_VERSION = 1

SCHEMA = """
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

# Built after bulk loading: cheaper than maintaining them row by row.
INDEXES = """
CREATE INDEX membership_by_household ON membership (household_id, position, idcs, relationship);
"""

REGISTRY_FILE = "registry.sqlite"
# Reads through a memory map: no read() syscall per page, one copy shared by all threads.
MMAP_BYTES = 1 << 34


class RegistryError(Exception):
    """The registry file does not exist or is not a Jisr registry."""


def iso_to_date(text: str | None) -> Date | None:
    """google.type.Date from 'YYYY-MM-DD' text, None for NULL."""
    if text is None:
        return None
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
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise RegistryError(f"{path}: registry schema {version} is not {SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False
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

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
