"""WAL mode for a SQLite file that several processes may open at the same moment."""

from __future__ import annotations

import sqlite3
import time


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
