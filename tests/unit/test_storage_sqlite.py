"""The SQLite plumbing of the stores (gateway/storage/sqlite.py): WAL, pooled read-only
readers, serialised write transactions, read-only opens that create nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage import sqlite as storage_sqlite
from gateway.storage.sqlite import SQLiteFile, use_wal


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "unit.sqlite"


@pytest.fixture
def db(path: Path) -> Iterator[SQLiteFile]:
    file = SQLiteFile(path, what="unit store")
    yield file
    file.close()


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_writable_file_gets_its_directory_and_wal(db: SQLiteFile, path: Path) -> None:
    assert path.parent.is_dir()
    full, normal = db.writer("FULL"), db.writer("NORMAL")
    assert pragma(full, "journal_mode") == "wal"
    assert (pragma(full, "synchronous"), pragma(normal, "synchronous")) == (2, 1)
    assert pragma(full, "busy_timeout") == storage_sqlite.BUSY_TIMEOUT_MS


def test_a_write_commits_at_the_end_of_its_block(db: SQLiteFile) -> None:
    writer = db.writer("FULL")
    with db.write(writer) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    with db.read() as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_failed_write_leaves_nothing(db: SQLiteFile) -> None:
    writer = db.writer("FULL")
    with db.write(writer) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")

    def insert_then_fail() -> None:
        with db.write(writer) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            raise KeyError("the caller's error")

    with pytest.raises(KeyError):
        insert_then_fail()
    assert not writer.in_transaction
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_readers_are_read_only_and_reused(db: SQLiteFile) -> None:
    with db.write(db.writer("FULL")) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    with db.read() as first:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            first.execute("INSERT INTO t VALUES (1)")
        with db.read() as second:  # a concurrent reader gets a connection of its own
            assert second is not first
    with db.read() as again:
        assert again in (first, second)


def test_a_closed_file_refuses_reads_and_writes(db: SQLiteFile) -> None:
    writer = db.writer("FULL")
    db.close()
    with pytest.raises(RuntimeError, match="unit store is closed"), db.read():
        pass
    with pytest.raises(RuntimeError, match="unit store is closed"), db.write(writer):
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        writer.execute("SELECT 1")  # closed with the file


def test_a_read_only_open_never_creates_the_file(path: Path) -> None:
    db = SQLiteFile(path, what="unit store", read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="unable to open"), db.read():
            pass
        with pytest.raises(RuntimeError, match=f"unit store {path} is open read-only"):
            db.writer("FULL")
    finally:
        db.close()
    assert not path.exists()
    assert not path.parent.exists()


def test_a_read_only_open_reads_an_existing_file(db: SQLiteFile, path: Path) -> None:
    with db.write(db.writer("FULL")) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    reader = SQLiteFile(path, what="unit store", read_only=True)
    try:
        with reader.read() as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                conn.execute("INSERT INTO t VALUES (2)")
    finally:
        reader.close()


def test_wal_waits_for_another_opener_holding_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal mode change ignores the busy handler: use_wal retries it itself."""
    path = tmp_path / "busy.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN EXCLUSIVE")
    retries: list[float] = []

    def other_finishes(seconds: float) -> None:  # instead of sleeping between attempts
        retries.append(seconds)
        if other.in_transaction:
            other.execute("COMMIT")

    monkeypatch.setattr(time, "sleep", other_finishes)
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)  # no busy handler wait
    try:
        use_wal(conn, 10_000)
        assert pragma(conn, "journal_mode") == "wal"
        assert len(retries) == 1
    finally:
        conn.close()
        other.close()


def test_wal_gives_up_when_the_file_stays_held(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN EXCLUSIVE")
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)  # no busy handler wait
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            use_wal(conn, 0)  # the deadline has passed at the first failure
    finally:
        conn.close()
        other.execute("COMMIT")
        other.close()
