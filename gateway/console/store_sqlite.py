"""The embedded console store: state_dir/console.sqlite in WAL mode, safe from many threads.

The web app calls it from a thread pool and `jisr console user` from another process at
the same time; gateway/storage/sqlite.py makes that safe: pooled reader connections that
never wait (WAL), and writes serialised under one process lock in BEGIN IMMEDIATE
transactions (another process waits up to the busy timeout instead of failing).

Two writer connections, by what a power cut may lose:
- accounts and session deletions with synchronous=FULL: a disabled account, a changed
  password or a logout acknowledged must not come back after a crash;
- session saves and touches, login failures and purges with synchronous=NORMAL: written on
  every page view and login; a crash may lose the last few (never corrupt the file), which
  at worst ends a session early or forgets a failed login.
"""

from __future__ import annotations

from pathlib import Path

from gateway.console import accounts, oidc, sessions
from gateway.console.accounts import Account, AccountExists, UnknownAccountError
from gateway.console.migrations import (
    ACCOUNT_COLUMNS,
    ACCOUNT_LIST,
    PENDING_COLUMNS,
    PENDING_LIST,
    SESSION_COLUMNS,
    SESSION_LIST,
    SQLITE_LINE,
    account_from_row,
    account_row,
    pending_from_row,
    pending_row,
    session_from_row,
    session_row,
)
from gateway.console.oidc import PendingLogin
from gateway.console.sessions import Session
from gateway.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteFile

_ADD_ACCOUNT = f"""INSERT INTO console_account ({ACCOUNT_LIST})
    VALUES ({", ".join("?" for _ in ACCOUNT_COLUMNS)})
    ON CONFLICT (username) DO NOTHING"""
_ACCOUNT = f"SELECT {ACCOUNT_LIST} FROM console_account WHERE username = ?"
_ACCOUNTS = f"SELECT {ACCOUNT_LIST} FROM console_account ORDER BY username"
_UPDATE_ACCOUNT = """UPDATE console_account SET password_hash = ?, totp_secret = ?, disabled = ?
    WHERE username = ?"""
_FAILURE = "INSERT INTO console_login_failure (username, at_us) VALUES (?, ?)"
_FAILURES = """SELECT at_us FROM console_login_failure WHERE username = ? AND at_us >= ?
    ORDER BY at_us"""
_CLEAR_FAILURES = "DELETE FROM console_login_failure WHERE username = ?"
_SAVE_SESSION = f"""INSERT OR REPLACE INTO console_session ({SESSION_LIST})
    VALUES ({", ".join("?" for _ in SESSION_COLUMNS)})"""
_UPDATE_SESSION = """UPDATE console_session SET last_seen_us = max(last_seen_us, ?), lang = ?
    WHERE token_hash = ? AND username = ?"""
_SESSION = f"SELECT {SESSION_LIST} FROM console_session WHERE token_hash = ?"
_DELETE_SESSION = "DELETE FROM console_session WHERE token_hash = ?"
_DELETE_SESSIONS_OF = "DELETE FROM console_session WHERE username = ?"
_PURGE_SESSIONS = "DELETE FROM console_session WHERE last_seen_us <= ? OR created_us <= ?"
_PURGE_FAILURES = "DELETE FROM console_login_failure WHERE at_us < ?"
_LINK = """INSERT INTO console_oidc_link (issuer, subject, username, created_us)
    SELECT ?, ?, username, ? FROM console_account WHERE username = ?
    ON CONFLICT DO NOTHING"""
_HOLDER = "SELECT username FROM console_oidc_link WHERE issuer = ? AND subject = ?"
_UNLINK = "DELETE FROM console_oidc_link WHERE username = ? AND issuer = ?"
_LINKED = f"""SELECT {", ".join(f"a.{c}" for c in ACCOUNT_COLUMNS)}
    FROM console_oidc_link l JOIN console_account a ON a.username = l.username
    WHERE l.issuer = ? AND l.subject = ?"""
_SAVE_PENDING = f"""INSERT INTO console_oidc_pending ({PENDING_LIST})
    SELECT {", ".join("?" for _ in PENDING_COLUMNS)}
    WHERE (SELECT count(*) FROM console_oidc_pending WHERE created_us > ?) < ?"""
_TAKE_PENDING = f"DELETE FROM console_oidc_pending WHERE state_hash = ? RETURNING {PENDING_LIST}"
_PURGE_PENDING = "DELETE FROM console_oidc_pending WHERE created_us <= ?"


class SQLiteConsoleStore:
    """ConsoleStore over one SQLite file (see the module docstring for why)."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self._db = SQLiteFile(path, what="console store", busy_timeout_ms=busy_timeout_ms)
        try:
            self._durable = self._db.writer("FULL")
            self._activity = self._db.writer("NORMAL")
            self._db.migrate(self._durable, SQLITE_LINE)
        except BaseException:
            self.close()
            raise

    def add_account(self, account: Account) -> None:
        with self._db.write(self._durable) as conn:
            added = conn.execute(_ADD_ACCOUNT, account_row(account)).rowcount
        if added != 1:
            raise AccountExists(f"username: {account.username!r} exists already")

    def account(self, username: str) -> Account | None:
        with self._db.read() as conn:
            row = conn.execute(_ACCOUNT, (username,)).fetchone()
        return None if row is None else account_from_row(row)

    def accounts(self) -> list[Account]:
        with self._db.read() as conn:
            rows = conn.execute(_ACCOUNTS).fetchall()
        return [account_from_row(r) for r in rows]

    def update_account(self, account: Account) -> None:
        values = (account.password_hash, account.totp_secret, account.disabled, account.username)
        with self._db.write(self._durable) as conn:
            changed = conn.execute(_UPDATE_ACCOUNT, values).rowcount
        if changed != 1:
            raise UnknownAccountError(f"username: no account {account.username!r}")

    def record_failure(self, username: str, at_us: int) -> None:
        with self._db.write(self._activity) as conn:
            conn.execute(_FAILURE, (username, at_us))

    def failures_since(self, username: str, since_us: int) -> list[int]:
        with self._db.read() as conn:
            rows = conn.execute(_FAILURES, (username, since_us)).fetchall()
        return [int(at_us) for (at_us,) in rows]

    def clear_failures(self, username: str) -> None:
        with self._db.write(self._activity) as conn:
            conn.execute(_CLEAR_FAILURES, (username,))

    def save_session(self, session: Session) -> None:
        with self._db.write(self._activity) as conn:
            conn.execute(_SAVE_SESSION, session_row(session))

    def update_session(self, session: Session) -> bool:
        values = (session.last_seen_us, session.lang, session.token_hash, session.username)
        with self._db.write(self._activity) as conn:
            return conn.execute(_UPDATE_SESSION, values).rowcount == 1

    def session(self, token_hash: str) -> Session | None:
        with self._db.read() as conn:
            row = conn.execute(_SESSION, (token_hash,)).fetchone()
        return None if row is None else session_from_row(row)

    def delete_session(self, token_hash: str) -> None:
        with self._db.write(self._durable) as conn:
            conn.execute(_DELETE_SESSION, (token_hash,))

    def delete_sessions_of(self, username: str) -> int:
        with self._db.write(self._durable) as conn:
            return int(conn.execute(_DELETE_SESSIONS_OF, (username,)).rowcount)

    def link_oidc(self, username: str, issuer: str, subject: str, at_us: int) -> None:
        with self._db.write(self._durable) as conn:
            if conn.execute(_LINK, (issuer, subject, at_us, username)).rowcount == 1:
                return
            known = conn.execute(_ACCOUNT, (username,)).fetchone() is not None
            holder = conn.execute(_HOLDER, (issuer, subject)).fetchone()
        raise oidc.link_refused(username, issuer, known=known, holder=holder and holder[0])

    def unlink_oidc(self, username: str, issuer: str) -> bool:
        with self._db.write(self._durable) as conn:
            return int(conn.execute(_UNLINK, (username, issuer)).rowcount) > 0

    def oidc_account(self, issuer: str, subject: str) -> Account | None:
        with self._db.read() as conn:
            row = conn.execute(_LINKED, (issuer, subject)).fetchone()
        return None if row is None else account_from_row(row)

    def save_oidc_login(self, pending: PendingLogin, live_since_us: int, limit: int) -> bool:
        values = (*pending_row(pending), live_since_us, limit)
        with self._db.write(self._activity) as conn:
            return int(conn.execute(_SAVE_PENDING, values).rowcount) == 1

    def take_oidc_login(self, state_hash: str) -> PendingLogin | None:
        with self._db.write(self._activity) as conn:
            rows = conn.execute(_TAKE_PENDING, (state_hash,)).fetchall()  # done before COMMIT
        return pending_from_row(rows[0]) if rows else None

    def purge_expired(self, now_us: int) -> int:
        cutoffs = (sessions.idle_cutoff_us(now_us), sessions.absolute_cutoff_us(now_us))
        with self._db.write(self._activity) as conn:
            purged = int(conn.execute(_PURGE_SESSIONS, cutoffs).rowcount)
            conn.execute(_PURGE_FAILURES, (accounts.failures_since_us(now_us),))
            conn.execute(_PURGE_PENDING, (oidc.pending_cutoff_us(now_us),))
        return purged

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        self._db.close()
