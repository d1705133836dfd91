"""The migration runner (gateway/storage/migrations.py), on an SQLite file.

The same runner migrates every store on both backends; here it runs through
`SQLiteFile.migrate`, as the SQLite stores use it (PostgreSQL: test_storage_postgres.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.storage.migrations import Migration, SchemaTooNewError, VersionLine
from gateway.storage.sqlite import SQLiteFile

TABLE = "unit_schema_migrations"
# Each version depends on the one before (v2 fills v1's table, v3 reads what v2 wrote):
# applied out of order, they fail.
V1 = Migration(1, "a table", ("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)",))
V2 = Migration(2, "its first row", ("INSERT INTO item (id, name) VALUES (1, 'first')",))
V3 = Migration(
    3,
    "a copy of it",
    (
        "CREATE TABLE item_copy (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO item_copy SELECT id, name FROM item",
    ),
)


def line(*migrations: Migration) -> VersionLine:
    return VersionLine("unit", TABLE, migrations)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "unit.sqlite"


@pytest.fixture
def db(path: Path) -> Iterator[SQLiteFile]:
    file = SQLiteFile(path, what="unit store")
    yield file
    file.close()


def migrate(db: SQLiteFile, versions: VersionLine) -> None:
    db.migrate(db.writer("FULL"), versions)


def sql(path: Path, statement: str) -> list[tuple[object, ...]]:
    """One statement on the file, outside the code under test."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


def applied(path: Path) -> list[int]:
    return [int(str(v)) for (v,) in sql(path, f"SELECT version FROM {TABLE} ORDER BY version")]


def test_a_new_database_gets_every_migration_in_order(db: SQLiteFile, path: Path) -> None:
    migrate(db, line(V1, V2, V3))
    assert applied(path) == [1, 2, 3]
    assert sql(path, "SELECT id, name FROM item_copy") == [(1, "first")]
    assert db.applied_version(line(V1, V2, V3)) == 3


def test_each_version_records_when_it_was_applied(db: SQLiteFile, path: Path) -> None:
    migrate(db, line(V1, V2))
    stamps = [str(at) for (at,) in sql(path, f"SELECT applied_at FROM {TABLE}")]
    assert len(stamps) == 2
    assert all(len(at) == len("2025-01-01T00:00:00Z") and at.endswith("Z") for at in stamps)


def test_migrating_again_changes_nothing(db: SQLiteFile, path: Path) -> None:
    versions = line(V1, V2, V3)
    migrate(db, versions)
    migrate(db, versions)  # V1's CREATE TABLE or V2's row again would fail or duplicate
    assert applied(path) == [1, 2, 3]
    assert sql(path, "SELECT count(*) FROM item") == [(1,)]


def test_an_older_database_gets_only_the_versions_it_lacks(db: SQLiteFile, path: Path) -> None:
    migrate(db, line(V1))
    assert applied(path) == [1]
    migrate(db, line(V1, V2, V3))
    assert applied(path) == [1, 2, 3]
    assert sql(path, "SELECT count(*) FROM item") == [(1,)]


def test_a_failing_migration_keeps_the_versions_before_it(db: SQLiteFile, path: Path) -> None:
    """One transaction per migration: a failure undoes only its own statements."""
    broken = Migration(
        2, "half applied", ("INSERT INTO item (id) VALUES (7)", "INSERT INTO nowhere VALUES (1)")
    )
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(db, line(V1, broken))
    assert applied(path) == [1]
    assert sql(path, "SELECT count(*) FROM item") == [(0,)]
    migrate(db, line(V1, V2))  # fixed code carries on from version 1
    assert applied(path) == [1, 2]


def test_a_database_newer_than_the_code_is_refused(db: SQLiteFile, path: Path) -> None:
    migrate(db, line(V1, V2, V3))
    with pytest.raises(SchemaTooNewError) as refused:
        migrate(db, line(V1, V2))
    assert str(refused.value) == (
        f"unit database {path} is at schema version 3, but this Jisr knows versions up to 2: "
        "run a Jisr at least as new as the one that migrated it"
    )
    assert applied(path) == [1, 2, 3]


def test_a_database_with_an_unknown_version_recorded_is_refused_before_any_change(
    db: SQLiteFile, path: Path
) -> None:
    migrate(db, line(V1))
    sql(path, f"INSERT INTO {TABLE} (version, applied_at) VALUES (9, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match="schema version 9"):
        migrate(db, line(V1, V2))
    assert sql(path, "SELECT count(*) FROM item") == [(0,)]


def test_processes_migrating_one_file_together_apply_each_version_once(path: Path) -> None:
    versions = line(V1, V2, V3)
    files = [SQLiteFile(path, what="unit store") for _ in range(4)]
    try:
        writers = [f.writer("FULL") for f in files]
        with ThreadPoolExecutor(len(files)) as pool:
            list(pool.map(lambda i: files[i].migrate(writers[i], versions), range(len(files))))
    finally:
        for f in files:
            f.close()
    assert applied(path) == [1, 2, 3]
    assert sql(path, "SELECT count(*) FROM item_copy") == [(1,)]


def test_a_file_without_a_version_table_has_no_version(db: SQLiteFile) -> None:
    assert db.applied_version(line(V1)) is None
    migrate(db, line(V1))
    assert db.applied_version(line(V1)) == 1


@pytest.mark.parametrize(
    "versions",
    [(), (2,), (1, 3), (2, 1), (1, 1)],
    ids=["none", "not-from-1", "gap", "unordered", "repeated"],
)
def test_a_version_line_must_count_1_2_3(versions: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"{TABLE}: versions must be 1, 2, 3"):
        line(*(Migration(v, f"v{v}", ()) for v in versions))


def test_the_next_migration_is_the_first_above_the_current_version() -> None:
    versions = line(V1, V2, V3)
    assert versions.latest == 3
    assert [versions.next_after(v) for v in range(5)] == [V1, V2, V3, None, None]
    versions.check_known(3, "here")
    with pytest.raises(SchemaTooNewError, match="unit database here is at schema version 4"):
        versions.check_known(4, "here")
