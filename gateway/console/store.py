"""Where the console keeps its officers, failed logins and sessions (and the links to, and
sign-ins through, identity providers): one interface, an SQLite and a PostgreSQL backend.

The web app calls the store from a thread pool, and `jisr console user` from another
process at the same time, so both backends are safe for concurrent use (SQLite: pooled
readers and serialised writers over one WAL file; PostgreSQL: a connection pool and one
atomic statement per operation). The tables and their migrations are
gateway/console/migrations.py; this module adds the interface the console codes against
and `open_console_store`, the one module importing the backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gateway.console.accounts import Account, AccountExists, UnknownAccountError
from gateway.console.oidc import LinkTakenError, PendingLogin
from gateway.console.sessions import Session

__all__ = [
    "FILE_NAME",
    "AccountExists",
    "ConsoleStore",
    "LinkTakenError",
    "UnknownAccountError",
    "open_console_store",
]

FILE_NAME = "console.sqlite"


class ConsoleStore(Protocol):
    """Accounts, login failures and sessions of the console, shared by its processes."""

    def add_account(self, account: Account) -> None:
        """Store a new account; AccountExists if its username is taken."""
        ...

    def account(self, username: str) -> Account | None:
        """The account, or None if no account has that username."""
        ...

    def accounts(self) -> list[Account]:
        """Every account, by username (bytewise)."""
        ...

    def update_account(self, account: Account) -> None:
        """Replace the account's password hash, TOTP secret and disabled flag (username,
        institution, officer id and creation time never change); UnknownAccountError if
        there is no such account."""
        ...

    def record_failure(self, username: str, at_us: int) -> None:
        """Note a failed login for `username` (as typed: known or not) at `at_us`."""
        ...

    def failures_since(self, username: str, since_us: int) -> list[int]:
        """The times of the username's failed logins at or after `since_us`, oldest first."""
        ...

    def clear_failures(self, username: str) -> None:
        """Forget the username's failed logins (after a successful one)."""
        ...

    def save_session(self, session: Session) -> None:
        """Store a session, replacing any with the same token hash (a new login)."""
        ...

    def update_session(self, session: Session) -> bool:
        """Record a session's last request and language, only if the session still exists
        (False otherwise). Use it, not `save_session`, for a session already stored: a
        request racing a logout, a disable or a password change must not bring the
        deleted session back. `last_seen_us` never moves backwards."""
        ...

    def session(self, token_hash: str) -> Session | None:
        """The session of that token hash, expired or not; None if there is none."""
        ...

    def delete_session(self, token_hash: str) -> None:
        """End one session (logout); nothing happens if there is none."""
        ...

    def delete_sessions_of(self, username: str) -> int:
        """End every session of the user (disabled, password or TOTP changed); how many."""
        ...

    def link_oidc(self, username: str, issuer: str, subject: str, at_us: int) -> None:
        """Let the provider's (issuer, subject) sign in as `username`; UnknownAccountError
        if there is no such account, LinkTakenError if the subject is linked already or the
        account has a link at that issuer already (unlink it first)."""
        ...

    def unlink_oidc(self, username: str, issuer: str) -> bool:
        """Remove the account's link at `issuer`; whether there was one."""
        ...

    def oidc_account(self, issuer: str, subject: str) -> Account | None:
        """The account linked to (issuer, subject), disabled or not; None if none is."""
        ...

    def save_oidc_login(self, pending: PendingLogin, live_since_us: int, limit: int) -> bool:
        """Store a pending sign-in unless `limit` of them created after `live_since_us`
        are stored already (then False: too many sign-ins under way)."""
        ...

    def take_oidc_login(self, state_hash: str) -> PendingLogin | None:
        """The pending sign-in of that state hash, deleted as it is read: of two callers
        with the same state (a replay), one gets it and the other None. Expired or not."""
        ...

    def purge_expired(self, now_us: int) -> int:
        """Delete the sessions expired at `now_us` (sessions.expired) and return how many;
        also forget failed logins too old to matter for a lock (accounts.FAILURE_LOOKBACK_S),
        so that names typed by guessers do not pile up, and pending sign-ins older than
        oidc.STATE_TTL_S."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def open_console_store(database_url: str | None, state_dir: Path) -> ConsoleStore:
    """PostgreSQL when `database_url` is a postgresql:// URL (several console processes
    share it), else the SQLite file state_dir/console.sqlite. Migrates the schema before
    returning; raises ValueError for another URL scheme."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        # Imported here so that an embedded console never loads the PostgreSQL driver.
        from gateway.console.store_postgres import PostgresConsoleStore  # noqa: PLC0415

        return PostgresConsoleStore(database_url)
    if database_url:
        scheme = database_url.split(":", 1)[0]
        raise ValueError(f"unsupported console database URL scheme: {scheme!r}")
    from gateway.console.store_sqlite import SQLiteConsoleStore  # noqa: PLC0415

    return SQLiteConsoleStore(state_dir / FILE_NAME)
