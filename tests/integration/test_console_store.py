"""The console stores: one suite, run against SQLite and against PostgreSQL.

What the web app and `jisr console user` rely on must hold on both backends: accounts,
failed logins and sessions read back as stored, a username claimed once, sessions ended
for good, and all of it from many threads and several processes at once. PostgreSQL tests
get a fresh schema each (tests/support/databases.py says when they run). Accounts carry
a made-up hash: hashing is accounts.py's business, tested in the unit tests.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.console import sessions
from gateway.console.accounts import FAILURE_LOOKBACK_S, Account
from gateway.console.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from gateway.console.sessions import ABSOLUTE_TIMEOUT_S, IDLE_TIMEOUT_S, Session
from gateway.console.store import (
    FILE_NAME,
    AccountExists,
    ConsoleStore,
    UnknownAccountError,
    open_console_store,
)
from gateway.console.store_postgres import PostgresConsoleStore
from gateway.console.store_sqlite import SQLiteConsoleStore
from gateway.storage.migrations import SchemaTooNewError
from tests.support import databases
from tests.support.threads import run_together

T0 = 1_750_000_000_000_000  # microseconds since the epoch
S = 1_000_000


@dataclass
class ConsoleDatabase:
    """One console database under test, and direct SQL on it (what a DBA could do)."""

    backend: str  # "sqlite" or "postgresql"
    state_dir: Path
    url: str | None  # None for SQLite
    stores: list[ConsoleStore] = field(default_factory=list)

    def open(self) -> ConsoleStore:
        """A new store on this database, as another console process would open it."""
        store = open_console_store(self.url, self.state_dir)
        self.stores.append(store)
        return store

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (placeholders `?` on both backends)."""
        if self.url is None:
            conn = sqlite3.connect(self.state_dir / FILE_NAME, isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


@contextmanager
def console_database(backend: str, state_dir: Path) -> Iterator[ConsoleDatabase]:
    if backend == "sqlite":
        db = ConsoleDatabase(backend, state_dir, None)
        try:
            yield db
        finally:
            db.close()
        return
    with databases.postgres_schema() as url:
        db = ConsoleDatabase(backend, state_dir, url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleDatabase]:
    with console_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def store(db: ConsoleDatabase) -> ConsoleStore:
    return db.open()


def officer(username: str = "amina.b", *, totp: bool = False, n: int = 0) -> Account:
    """An account with a made-up (but realistic-looking) hash; `n` varies the officer id."""
    return Account(
        username=username,
        institution="CNSS",
        officer_id="officer-" + hashlib.sha256(f"{username}/{n}".encode()).hexdigest()[:16],
        password_hash=f"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA${username}",
        totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" if totp else None,
        disabled=False,
        created_us=T0,
    )


def session_of(username: str = "amina.b", at_us: int = T0, lang: str = "fr") -> Session:
    return sessions.new_session(username, lang, at_us)[1]


# Accounts.


def test_an_added_account_reads_back_equal(store: ConsoleStore) -> None:
    store.add_account(officer(totp=True))
    store.add_account(officer("karim.t"))
    assert store.account("amina.b") == officer(totp=True)
    assert store.account("karim.t") == officer("karim.t")


def test_an_unknown_username_has_no_account(store: ConsoleStore) -> None:
    assert store.account("nobody") is None


def test_accounts_are_listed_by_username_bytewise(store: ConsoleStore) -> None:
    names = ["bx", "b_x", "b.x", "b-x", "a.z"]
    for name in names:
        store.add_account(officer(name))
    assert [a.username for a in store.accounts()] == sorted(names)


def test_an_empty_store_lists_no_account(store: ConsoleStore) -> None:
    assert store.accounts() == []


def test_adding_a_taken_username_raises_and_keeps_the_first_account(store: ConsoleStore) -> None:
    store.add_account(officer())
    with pytest.raises(AccountExists, match=r"^username: 'amina\.b' exists already"):
        store.add_account(replace(officer(n=1), institution="CNDP"))
    assert store.account("amina.b") == officer()


def test_of_eight_threads_adding_one_username_exactly_one_succeeds(db: ConsoleDatabase) -> None:
    store = db.open()
    results = run_together(8, lambda i: store.add_account(officer(n=i)))
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, AccountExists) for r in results if r is not None)
    assert len(store.accounts()) == 1


def test_an_update_replaces_password_totp_and_disabled_only(store: ConsoleStore) -> None:
    store.add_account(officer())
    changed = replace(
        officer(totp=True),
        password_hash="$argon2id$new",
        disabled=True,
        institution="CNDP",
        officer_id="officer-0000000000000000",
        created_us=0,
    )
    store.update_account(changed)
    assert store.account("amina.b") == replace(
        officer(totp=True), password_hash="$argon2id$new", disabled=True
    )


def test_an_update_can_remove_the_totp_secret(store: ConsoleStore) -> None:
    store.add_account(officer(totp=True))
    store.update_account(officer(totp=False))
    stored = store.account("amina.b")
    assert stored is not None
    assert stored.totp_secret is None


def test_updating_an_unknown_account_raises(store: ConsoleStore) -> None:
    with pytest.raises(UnknownAccountError, match=r"^username: no account 'nobody'"):
        store.update_account(officer("nobody"))
    assert store.accounts() == []


# Failed logins.


def test_failures_read_back_oldest_first_from_the_time_asked(store: ConsoleStore) -> None:
    for at in (T0 + 3 * S, T0 + S, T0 + 2 * S, T0 - S):
        store.record_failure("amina.b", at)
    assert store.failures_since("amina.b", T0) == [T0 + S, T0 + 2 * S, T0 + 3 * S]


def test_failures_are_kept_per_username_known_or_not(store: ConsoleStore) -> None:
    store.record_failure("amina.b", T0)
    store.record_failure("no such officer", T0 + S)
    assert store.failures_since("amina.b", 0) == [T0]
    assert store.failures_since("no such officer", 0) == [T0 + S]


def test_two_failures_at_the_same_time_both_count(store: ConsoleStore) -> None:
    store.record_failure("amina.b", T0)
    store.record_failure("amina.b", T0)
    assert store.failures_since("amina.b", 0) == [T0, T0]


def test_clearing_failures_forgets_only_that_users(store: ConsoleStore) -> None:
    store.record_failure("amina.b", T0)
    store.record_failure("karim.t", T0)
    store.clear_failures("amina.b")
    assert store.failures_since("amina.b", 0) == []
    assert store.failures_since("karim.t", 0) == [T0]


def test_failures_from_eight_threads_are_all_recorded(db: ConsoleDatabase) -> None:
    store = db.open()

    def fail_25_times(i: int) -> None:
        for j in range(25):
            store.record_failure("amina.b", T0 + i * 100 + j)

    run_together(8, fail_25_times)
    assert len(store.failures_since("amina.b", 0)) == 200


# Sessions.


def test_a_saved_session_reads_back_equal(store: ConsoleStore) -> None:
    session = session_of(lang="ar")
    store.save_session(session)
    assert store.session(session.token_hash) == session


def test_an_unknown_token_hash_has_no_session(store: ConsoleStore) -> None:
    assert store.session(sessions.token_hash("never issued")) is None


def test_saving_a_session_again_replaces_it(store: ConsoleStore) -> None:
    session = session_of()
    store.save_session(session)
    later = replace(session, last_seen_us=T0 + S, lang="ar")
    store.save_session(later)
    assert store.session(session.token_hash) == later


def test_updating_a_session_records_its_last_request_and_language(store: ConsoleStore) -> None:
    session = session_of()
    store.save_session(session)
    later = replace(session, last_seen_us=T0 + S, lang="ar")
    assert store.update_session(later) is True
    assert store.session(session.token_hash) == later


def test_updating_a_deleted_session_does_not_bring_it_back(store: ConsoleStore) -> None:
    session = session_of()
    store.save_session(session)
    store.delete_session(session.token_hash)
    assert store.update_session(replace(session, last_seen_us=T0 + S)) is False
    assert store.session(session.token_hash) is None


def test_an_update_never_moves_last_seen_backwards(store: ConsoleStore) -> None:
    session = replace(session_of(), last_seen_us=T0 + 2 * S)
    store.save_session(session)
    assert store.update_session(replace(session, last_seen_us=T0 + S, lang="ar"))
    assert store.session(session.token_hash) == replace(session, lang="ar")


def test_deleting_a_session_ends_only_that_one(store: ConsoleStore) -> None:
    first, second = session_of(), session_of()
    store.save_session(first)
    store.save_session(second)
    store.delete_session(first.token_hash)
    store.delete_session(first.token_hash)  # again: nothing happens
    assert store.session(first.token_hash) is None
    assert store.session(second.token_hash) == second


def test_deleting_a_users_sessions_counts_them_and_spares_others(store: ConsoleStore) -> None:
    mine = [session_of("amina.b") for _ in range(3)]
    theirs = session_of("karim.t")
    for session in [*mine, theirs]:
        store.save_session(session)
    assert store.delete_sessions_of("amina.b") == 3
    assert store.delete_sessions_of("amina.b") == 0
    assert all(store.session(s.token_hash) is None for s in mine)
    assert store.session(theirs.token_hash) == theirs


def test_purging_deletes_idle_and_too_old_sessions_only(store: ConsoleStore) -> None:
    now = T0 + ABSOLUTE_TIMEOUT_S * S
    idle = replace(session_of(), last_seen_us=now - IDLE_TIMEOUT_S * S)
    too_old = replace(session_of(), last_seen_us=now - S)  # created at T0
    live = session_of(at_us=now - 2 * IDLE_TIMEOUT_S * S)
    live = replace(live, last_seen_us=now - S)
    for session in (idle, too_old, live):
        store.save_session(session)
    assert [sessions.expired(s, now) for s in (idle, too_old, live)] == [True, True, False]
    assert store.purge_expired(now) == 2
    assert store.session(idle.token_hash) is None
    assert store.session(too_old.token_hash) is None
    assert store.session(live.token_hash) == live


def test_purging_forgets_failures_too_old_to_lock(store: ConsoleStore) -> None:
    now = T0 + 10 * FAILURE_LOOKBACK_S * S
    horizon = now - FAILURE_LOOKBACK_S * S
    store.record_failure("guessed-name", horizon - 1)
    store.record_failure("amina.b", horizon)
    store.purge_expired(now)
    assert store.failures_since("guessed-name", 0) == []
    assert store.failures_since("amina.b", 0) == [horizon]


def test_sessions_saved_and_touched_from_eight_threads_are_all_kept(db: ConsoleDatabase) -> None:
    store = db.open()

    def login_and_browse(i: int) -> Session:
        session = session_of(f"officer-{i}")
        store.save_session(session)
        for step in range(1, 11):
            store.update_session(replace(session, last_seen_us=T0 + step * S))
        return replace(session, last_seen_us=T0 + 10 * S)

    made = run_together(8, login_and_browse)
    for session in made:
        assert isinstance(session, Session)
        assert store.session(session.token_hash) == session


# Several processes, one database.


def test_a_disable_through_one_store_is_seen_by_another(db: ConsoleDatabase) -> None:
    console, cli = db.open(), db.open()
    console.add_account(officer())
    session = session_of()
    console.save_session(session)
    cli.update_account(replace(officer(), disabled=True))
    assert cli.delete_sessions_of("amina.b") == 1
    assert console.account("amina.b") == replace(officer(), disabled=True)
    assert console.update_session(session) is False


def test_a_store_survives_reopening(db: ConsoleDatabase) -> None:
    store = db.open()
    store.add_account(officer(totp=True))
    session = session_of()
    store.save_session(session)
    store.record_failure("amina.b", T0)
    db.close()
    again = db.open()
    assert again.account("amina.b") == officer(totp=True)
    assert again.session(session.token_hash) == session
    assert again.failures_since("amina.b", 0) == [T0]


# Schema.


def test_migrations_are_idempotent(db: ConsoleDatabase) -> None:
    db.open().add_account(officer())
    db.close()
    reopened = db.open()
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    assert [v for (v,) in versions] == [m.version for m in migrations]
    assert reopened.account("amina.b") == officer()


def test_processes_opening_a_new_database_together_migrate_it_once(db: ConsoleDatabase) -> None:
    opened = run_together(4, lambda _: db.open())
    assert all(isinstance(s, SQLiteConsoleStore | PostgresConsoleStore) for s in opened), opened
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    assert [v for (v,) in versions] == [m.version for m in migrations]


def test_a_database_with_a_newer_schema_is_refused(db: ConsoleDatabase) -> None:
    db.open()
    db.close()
    db.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (999, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match=r"console database .* schema version 999"):
        db.open()


def test_the_console_keeps_its_own_version_line_beside_the_gateways(db: ConsoleDatabase) -> None:
    db.open()
    tables = (
        db.sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        if db.backend == "sqlite"
        else db.sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    )
    assert {name for (name,) in tables} == {
        MIGRATIONS_TABLE,
        "console_account",
        "console_login_failure",
        "console_session",
        "console_oidc_link",
        "console_oidc_pending",
    }


# Opening.


def test_without_a_url_the_store_is_console_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    store = open_console_store(None, tmp_path / "state")
    try:
        assert isinstance(store, SQLiteConsoleStore)
        assert (tmp_path / "state" / "console.sqlite").is_file()
    finally:
        store.close()


def test_a_url_of_another_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported console database URL scheme: 'mysql'"):
        open_console_store("mysql://db/console", tmp_path)
    assert not (tmp_path / "console.sqlite").exists()


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    store = open_console_store(None, tmp_path)
    store.close()
    with pytest.raises(RuntimeError, match="console store is closed"):
        store.account("amina.b")
