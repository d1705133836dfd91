"""The shared console store: PostgreSQL, when several console processes serve one site.

Connections come from gateway/storage/postgres.py's `StorePool` (autocommit, shared by
the pool's threads, failing fast while the database is down). Every operation is one
statement, atomic on its own, so no explicit transaction or lock is needed; a new
account's username is claimed by `INSERT ... ON CONFLICT DO NOTHING`, so two processes
adding the same user at once cannot both succeed.

Tables live in the connection's current schema (the URL's
`options=-csearch_path%3D<schema>`), with their versions in `console_schema_migrations`.
"""

from __future__ import annotations

from typing import Any

from gateway.console import accounts, oidc, sessions
from gateway.console.accounts import Account, AccountExists, UnknownAccountError
from gateway.console.migrations import (
    ACCOUNT_COLUMNS,
    ACCOUNT_LIST,
    PENDING_COLUMNS,
    PENDING_LIST,
    POSTGRES_LINE,
    SESSION_COLUMNS,
    SESSION_LIST,
    account_from_row,
    account_row,
    pending_from_row,
    pending_row,
    session_from_row,
    session_row,
)
from gateway.console.oidc import PendingLogin
from gateway.console.sessions import Session
from gateway.storage.postgres import (
    OPEN_TIMEOUT_S,
    POOL_MAX,
    POOL_MIN,
    POOL_TIMEOUT_S,
    StorePool,
)

_ADD_ACCOUNT = f"""INSERT INTO console_account ({ACCOUNT_LIST})
    VALUES ({", ".join("%s" for _ in ACCOUNT_COLUMNS)})
    ON CONFLICT (username) DO NOTHING"""
_ACCOUNT = f"SELECT {ACCOUNT_LIST} FROM console_account WHERE username = %s"
_ACCOUNTS = f"SELECT {ACCOUNT_LIST} FROM console_account ORDER BY username"
_UPDATE_ACCOUNT = """UPDATE console_account
    SET password_hash = %s, totp_secret = %s, disabled = %s WHERE username = %s"""
_FAILURE = "INSERT INTO console_login_failure (username, at_us) VALUES (%s, %s)"
_FAILURES = """SELECT at_us FROM console_login_failure WHERE username = %s AND at_us >= %s
    ORDER BY at_us"""
_CLEAR_FAILURES = "DELETE FROM console_login_failure WHERE username = %s"
_SAVE_SESSION = f"""INSERT INTO console_session ({SESSION_LIST})
    VALUES ({", ".join("%s" for _ in SESSION_COLUMNS)})
    ON CONFLICT (token_hash) DO UPDATE SET
        {", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS[1:])}"""
_UPDATE_SESSION = """UPDATE console_session
    SET last_seen_us = greatest(last_seen_us, %s), lang = %s
    WHERE token_hash = %s AND username = %s"""
_SESSION = f"SELECT {SESSION_LIST} FROM console_session WHERE token_hash = %s"
_DELETE_SESSION = "DELETE FROM console_session WHERE token_hash = %s"
_DELETE_SESSIONS_OF = "DELETE FROM console_session WHERE username = %s"
_PURGE_SESSIONS = "DELETE FROM console_session WHERE last_seen_us <= %s OR created_us <= %s"
_PURGE_FAILURES = "DELETE FROM console_login_failure WHERE at_us < %s"
_LINK = """INSERT INTO console_oidc_link (issuer, subject, username, created_us)
    SELECT %s, %s, username, %s FROM console_account WHERE username = %s
    ON CONFLICT DO NOTHING"""
_HOLDER = "SELECT username FROM console_oidc_link WHERE issuer = %s AND subject = %s"
_UNLINK = "DELETE FROM console_oidc_link WHERE username = %s AND issuer = %s"
_LINKED = f"""SELECT {", ".join(f"a.{c}" for c in ACCOUNT_COLUMNS)}
    FROM console_oidc_link l JOIN console_account a ON a.username = l.username
    WHERE l.issuer = %s AND l.subject = %s"""
# The count and the insert are one statement; two processes racing at the limit may
# both insert (READ COMMITTED): the bound is approximate by a few, which is its purpose.
_SAVE_PENDING = f"""INSERT INTO console_oidc_pending ({PENDING_LIST})
    SELECT {", ".join("%s" for _ in PENDING_COLUMNS)}
    WHERE (SELECT count(*) FROM console_oidc_pending WHERE created_us > %s) < %s"""
_TAKE_PENDING = f"DELETE FROM console_oidc_pending WHERE state_hash = %s RETURNING {PENDING_LIST}"
_PURGE_PENDING = "DELETE FROM console_oidc_pending WHERE created_us <= %s"


class PostgresConsoleStore:
    """ConsoleStore over PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        timeout: float = POOL_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.url = url
        self._pool = StorePool(
            url,
            name="jisr-console",
            what="console store",
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open_timeout=open_timeout,
        )
        try:
            self._pool.migrate(POSTGRES_LINE, docs="docs/audit-storage.md")
        except BaseException:
            self._pool.close()
            raise

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The first row of one autocommitted statement, None if it returns none."""
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _count(self, sql: str, params: tuple[Any, ...]) -> int:
        """The rows one autocommitted statement changed."""
        with self._pool.connection() as conn:
            return conn.execute(sql, params).rowcount

    def add_account(self, account: Account) -> None:
        if self._count(_ADD_ACCOUNT, account_row(account)) != 1:
            raise AccountExists(f"username: {account.username!r} exists already")

    def account(self, username: str) -> Account | None:
        row = self._one(_ACCOUNT, (username,))
        return None if row is None else account_from_row(row)

    def accounts(self) -> list[Account]:
        return [account_from_row(r) for r in self._all(_ACCOUNTS)]

    def update_account(self, account: Account) -> None:
        values = (account.password_hash, account.totp_secret, account.disabled, account.username)
        if self._count(_UPDATE_ACCOUNT, values) != 1:
            raise UnknownAccountError(f"username: no account {account.username!r}")

    def record_failure(self, username: str, at_us: int) -> None:
        self._count(_FAILURE, (username, at_us))

    def failures_since(self, username: str, since_us: int) -> list[int]:
        return [int(at_us) for (at_us,) in self._all(_FAILURES, (username, since_us))]

    def clear_failures(self, username: str) -> None:
        self._count(_CLEAR_FAILURES, (username,))

    def save_session(self, session: Session) -> None:
        self._count(_SAVE_SESSION, session_row(session))

    def update_session(self, session: Session) -> bool:
        values = (session.last_seen_us, session.lang, session.token_hash, session.username)
        return self._count(_UPDATE_SESSION, values) == 1

    def session(self, token_hash: str) -> Session | None:
        row = self._one(_SESSION, (token_hash,))
        return None if row is None else session_from_row(row)

    def delete_session(self, token_hash: str) -> None:
        self._count(_DELETE_SESSION, (token_hash,))

    def delete_sessions_of(self, username: str) -> int:
        return self._count(_DELETE_SESSIONS_OF, (username,))

    def link_oidc(self, username: str, issuer: str, subject: str, at_us: int) -> None:
        if self._count(_LINK, (issuer, subject, at_us, username)) == 1:
            return
        known = self._one(_ACCOUNT, (username,)) is not None
        holder = self._one(_HOLDER, (issuer, subject))
        raise oidc.link_refused(username, issuer, known=known, holder=holder and holder[0])

    def unlink_oidc(self, username: str, issuer: str) -> bool:
        return self._count(_UNLINK, (username, issuer)) > 0

    def oidc_account(self, issuer: str, subject: str) -> Account | None:
        row = self._one(_LINKED, (issuer, subject))
        return None if row is None else account_from_row(row)

    def save_oidc_login(self, pending: PendingLogin, live_since_us: int, limit: int) -> bool:
        return self._count(_SAVE_PENDING, (*pending_row(pending), live_since_us, limit)) == 1

    def take_oidc_login(self, state_hash: str) -> PendingLogin | None:
        row = self._one(_TAKE_PENDING, (state_hash,))
        return None if row is None else pending_from_row(row)

    def purge_expired(self, now_us: int) -> int:
        cutoffs = (sessions.idle_cutoff_us(now_us), sessions.absolute_cutoff_us(now_us))
        purged = self._count(_PURGE_SESSIONS, cutoffs)
        self._count(_PURGE_FAILURES, (accounts.failures_since_us(now_us),))
        self._count(_PURGE_PENDING, (oidc.pending_cutoff_us(now_us),))
        return purged

    def close(self) -> None:
        self._pool.close()
