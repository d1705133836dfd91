"""An SQLite file in WAL mode, shared by a process's threads and by other processes.

Reads use pooled read-only connections, one per concurrent reader, so they never wait
for each other or for a writer (WAL). Writes go through the store's writer connections
under one process lock, each in a BEGIN IMMEDIATE transaction: another process writing
the same file makes us wait up to the busy timeout instead of failing. A store picks each
writer's `synchronous` level by what its data must survive (FULL: a power cut, at an
fsync of the WAL per commit).

Opened `read_only`, the file is reached through a `mode=ro` URI: a missing file is an
error rather than a new empty database, and nothing can be written.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from gateway.storage.migrations import VersionLine, VersionTable, applied_version, migrate

BUSY_TIMEOUT_MS = 10_000

VERSION_TABLE = VersionTable(
    create="CREATE TABLE IF NOT EXISTS {table} ("
    "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    insert="INSERT INTO {table} (version, applied_at) VALUES (?, ?)",
    row=lambda version: (version, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
)


def use_wal(conn: sqlite3.Connection, timeout_ms: int) -> None:
    """Switch the file to WAL, retrying while another opener holds the lock.

    Changing the journal mode needs the file to itself and SQLite does not wait on its busy
    handler for it, so two gateways starting together would otherwise fail at random.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SQLiteFile:
    """The connections of one store to one SQLite file (see the module docstring for why).

    `what` names the store in errors ("consent store is closed")."""

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._what = what
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()  # serialises this process's writes
        self._pool_lock = threading.Lock()  # guards the list of connections
        self._connections: list[sqlite3.Connection] = []
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = False
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)

    def writer(self, synchronous: Literal["FULL", "NORMAL"]) -> sqlite3.Connection:
        """A new connection for `write` transactions, the file switched to WAL."""
        if self.read_only:
            raise RuntimeError(f"{self._what} {self.path} is open read-only")
        conn = self._connect()
        use_wal(conn, self._busy_timeout_ms)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        return conn

    def _connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), closed by `close`.
        A read-only file's connections use mode=ro: SQLite must not create the file."""
        if self.read_only:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        with self._pool_lock:
            self._connections.append(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return conn

    @contextmanager
    def write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction on a `writer` connection, taking the file's write lock up
        front (BEGIN IMMEDIATE); committed at the end of the block, rolled back on error."""
        with self._lock:
            self.check_open()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A reader connection for this thread's statements, reused by later readers."""
        self.check_open()
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            self._idle.put(conn)

    def check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self._what} is closed")

    def migrate(self, conn: sqlite3.Connection, line: VersionLine) -> None:
        """Apply the migrations the file lacks through the `writer` connection `conn`."""
        migrate(lambda: self.write(conn), line, str(self.path), VERSION_TABLE)

    def applied_version(self, line: VersionLine) -> int | None:
        """The file's schema version on `line`, None without a version table (for a
        read-only open, which must not migrate)."""
        with self.read() as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (line.table,)
            ).fetchone()
            return None if found is None else applied_version(conn, line.table)

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        with self._lock, self._pool_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
