"""Versioned schema migrations, applied when a store opens: one runner for every store.

A store's schema on one backend is a *version line*: its migrations, versions 1, 2, 3...
in order, and a table `<store>_schema_migrations` recording those applied (prefixed
because every Jisr store may share one PostgreSQL schema, each with its own line).
Opening applies the versions the database lacks, one migration per transaction, so a
failure leaves the database at the last version that completed. A database migrated by
newer code is refused rather than misread. Never edit a released migration: append a new
version.

The runner is the same for both backends; each brings its transactions (SQLite: BEGIN
IMMEDIATE under the process's write lock; PostgreSQL: a transaction holding an advisory
lock, so that replicas starting together migrate once) and its version table's SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: the statements that take the previous version to it."""

    version: int
    description: str
    statements: tuple[str, ...]


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer Jisr than this one; opening it could corrupt it."""


@dataclass(frozen=True, slots=True)
class VersionLine:
    """One store's migrations on one backend and the table recording those applied.

    Checked when built (at import of the store's migrations module): the runner applies
    the first version above the database's, so versions must be 1, 2, 3... with no gap.
    """

    store: str  # "consent", "audit": names the database in messages and in lock keys
    table: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if not versions or versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.table}: versions must be 1, 2, 3... in order: {versions}")

    @property
    def latest(self) -> int:
        """The version this code migrates to (and the newest it can read)."""
        return self.migrations[-1].version

    def check_known(self, current: int, where: str) -> None:
        """Refuse a database whose schema version this code does not know."""
        if current > self.latest:
            raise SchemaTooNewError(
                f"{self.store} database {where} is at schema version {current}, but this Jisr "
                f"knows versions up to {self.latest}: run a Jisr at least as new as the one "
                "that migrated it"
            )

    def next_after(self, current: int) -> Migration | None:
        """The migration that takes a database at `current` one version up; None if none."""
        return next((m for m in self.migrations if m.version > current), None)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """What the runner needs of a connection: sqlite3's and psycopg's both have it."""

    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...


@dataclass(frozen=True, slots=True)
class VersionTable:
    """A backend's SQL for a version table; `{table}` stands for its name."""

    create: str  # CREATE TABLE IF NOT EXISTS {table} (version ..., applied_at ...)
    insert: str  # records one version; parameters from `row`
    row: Callable[[int], tuple[Any, ...]]


def applied_version(conn: Connection, table: str) -> int:
    """The newest version recorded in `table`, 0 if none (the table must exist)."""
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {table}").fetchone()
    return int(row[0])


def migrate(
    begin: Callable[[], AbstractContextManager[Connection]],
    line: VersionLine,
    where: str,
    sql: VersionTable,
) -> None:
    """Apply the migrations of `line` the database lacks, each in a transaction of its own
    from `begin`; raise SchemaTooNewError for a database newer than `line` (`where` names
    it in the message). Each transaction re-reads the version, so processes migrating the
    same database at once (serialised by `begin`'s lock) apply each migration once."""
    while True:
        with begin() as conn:
            conn.execute(sql.create.format(table=line.table))
            current = applied_version(conn, line.table)
            line.check_known(current, where)
            step = line.next_after(current)
            if step is None:
                return
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(sql.insert.format(table=line.table), sql.row(step.version))
