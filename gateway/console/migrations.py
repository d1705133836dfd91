"""The console store's tables: versioned migrations per backend, and how a row maps to a value.

Each backend applies the versions its database lacks when it opens, one migration per
transaction, recording each in `console_schema_migrations` (the console may share a
PostgreSQL schema with the gateway's stores, each keeping its own version line); the
runner is gateway/storage/migrations.py. Never edit a released migration: append one.

Tables:
- `console_account`: one row per officer, by username; `officer_id` unique.
- `console_login_failure`: one row per failed login (by the username typed, known or not),
  read back by time to throttle; rows older than the lookback are purged.
- `console_session`: one row per live session, keyed by the SHA-256 of its cookie token.
- `console_oidc_link` (2): which account an identity provider's subject signs in, by
  (issuer, subject); an account has at most one subject per issuer.
- `console_oidc_pending` (2): sign-ins sent to a provider and not back yet, keyed by the
  SHA-256 of their state; taken once, purged after gateway/console/oidc.py's STATE_TTL_S.

The row mappings live here, beside the columns they depend on, so that both backends
share them without importing gateway/console/store.py (which imports the backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.console.accounts import Account
from gateway.console.oidc import PendingLogin
from gateway.console.sessions import Session
from gateway.storage.migrations import Migration, VersionLine

MIGRATIONS_TABLE = "console_schema_migrations"

# Columns in the order of the dataclasses' fields, so a row maps to a value positionally.
ACCOUNT_COLUMNS = (
    "username",
    "institution",
    "officer_id",
    "password_hash",
    "totp_secret",
    "disabled",
    "created_us",
)
SESSION_COLUMNS = ("token_hash", "username", "csrf", "created_us", "last_seen_us", "lang")
PENDING_COLUMNS = ("state_hash", "provider", "nonce", "code_verifier", "next", "created_us")
ACCOUNT_LIST = ", ".join(ACCOUNT_COLUMNS)
SESSION_LIST = ", ".join(SESSION_COLUMNS)
PENDING_LIST = ", ".join(PENDING_COLUMNS)

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "accounts, login failures, sessions",
        (
            """
            CREATE TABLE console_account (
                username TEXT PRIMARY KEY,
                institution TEXT NOT NULL,
                officer_id TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                totp_secret TEXT,
                disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
                created_us INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE console_login_failure (
                username TEXT NOT NULL,
                at_us INTEGER NOT NULL
            )
            """,
            "CREATE INDEX console_login_failure_by_user ON console_login_failure (username, at_us)",
            "CREATE INDEX console_login_failure_by_time ON console_login_failure (at_us)",
            """
            CREATE TABLE console_session (
                token_hash TEXT PRIMARY KEY,
                username TEXT NOT NULL,
                csrf TEXT NOT NULL,
                created_us INTEGER NOT NULL,
                last_seen_us INTEGER NOT NULL,
                lang TEXT NOT NULL
            ) WITHOUT ROWID
            """,
            "CREATE INDEX console_session_by_user ON console_session (username)",
        ),
    ),
    Migration(
        2,
        "identity providers: links to their subjects, pending sign-ins",
        (
            """
            CREATE TABLE console_oidc_link (
                issuer TEXT NOT NULL,
                subject TEXT NOT NULL,
                username TEXT NOT NULL,
                created_us INTEGER NOT NULL,
                PRIMARY KEY (issuer, subject),
                UNIQUE (username, issuer)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE console_oidc_pending (
                state_hash TEXT PRIMARY KEY,
                provider TEXT NOT NULL,
                nonce TEXT NOT NULL,
                code_verifier TEXT NOT NULL,
                next TEXT NOT NULL,
                created_us INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            "CREATE INDEX console_oidc_pending_by_time ON console_oidc_pending (created_us)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "accounts, login failures, sessions",
        (
            # Usernames sort bytewise (COLLATE "C"), as in SQLite, so `accounts()` lists
            # them in the same order on both backends whatever the database's locale.
            """
            CREATE TABLE console_account (
                username text COLLATE "C" PRIMARY KEY,
                institution text NOT NULL,
                officer_id text NOT NULL UNIQUE,
                password_hash text NOT NULL,
                totp_secret text,
                disabled boolean NOT NULL,
                created_us bigint NOT NULL
            )
            """,
            """
            CREATE TABLE console_login_failure (
                username text NOT NULL,
                at_us bigint NOT NULL
            )
            """,
            "CREATE INDEX console_login_failure_by_user ON console_login_failure (username, at_us)",
            "CREATE INDEX console_login_failure_by_time ON console_login_failure (at_us)",
            """
            CREATE TABLE console_session (
                token_hash text PRIMARY KEY,
                username text NOT NULL,
                csrf text NOT NULL,
                created_us bigint NOT NULL,
                last_seen_us bigint NOT NULL,
                lang text NOT NULL
            )
            """,
            "CREATE INDEX console_session_by_user ON console_session (username)",
        ),
    ),
    Migration(
        2,
        "identity providers: links to their subjects, pending sign-ins",
        (
            # Issuers and subjects are compared exactly (bytewise), as OpenID Connect does.
            """
            CREATE TABLE console_oidc_link (
                issuer text COLLATE "C" NOT NULL,
                subject text COLLATE "C" NOT NULL,
                username text COLLATE "C" NOT NULL
                    REFERENCES console_account (username) ON DELETE CASCADE,
                created_us bigint NOT NULL,
                PRIMARY KEY (issuer, subject),
                UNIQUE (username, issuer)
            )
            """,
            """
            CREATE TABLE console_oidc_pending (
                state_hash text PRIMARY KEY,
                provider text NOT NULL,
                nonce text NOT NULL,
                code_verifier text NOT NULL,
                next text NOT NULL,
                created_us bigint NOT NULL
            )
            """,
            "CREATE INDEX console_oidc_pending_by_time ON console_oidc_pending (created_us)",
        ),
    ),
)

SQLITE_LINE = VersionLine("console", MIGRATIONS_TABLE, SQLITE)
POSTGRES_LINE = VersionLine("console", MIGRATIONS_TABLE, POSTGRES)


def account_row(account: Account) -> tuple[Any, ...]:
    """The account's values in ACCOUNT_COLUMNS order."""
    return (
        account.username,
        account.institution,
        account.officer_id,
        account.password_hash,
        account.totp_secret,
        account.disabled,
        account.created_us,
    )


def account_from_row(row: Sequence[Any]) -> Account:
    """An account from a row in ACCOUNT_COLUMNS order (SQLite's 0/1 becomes a bool)."""
    username, institution, officer_id, password_hash, totp_secret, disabled, created_us = row
    return Account(
        username=str(username),
        institution=str(institution),
        officer_id=str(officer_id),
        password_hash=str(password_hash),
        totp_secret=None if totp_secret is None else str(totp_secret),
        disabled=bool(disabled),
        created_us=int(created_us),
    )


def session_row(session: Session) -> tuple[Any, ...]:
    """The session's values in SESSION_COLUMNS order."""
    return (
        session.token_hash,
        session.username,
        session.csrf,
        session.created_us,
        session.last_seen_us,
        session.lang,
    )


def session_from_row(row: Sequence[Any]) -> Session:
    """A session from a row in SESSION_COLUMNS order."""
    token, username, csrf, created_us, last_seen_us, lang = row
    return Session(
        str(token), str(username), str(csrf), int(created_us), int(last_seen_us), str(lang)
    )


def pending_row(pending: PendingLogin) -> tuple[Any, ...]:
    """The pending sign-in's values in PENDING_COLUMNS order."""
    return (
        pending.state_hash,
        pending.provider,
        pending.nonce,
        pending.code_verifier,
        pending.next,
        pending.created_us,
    )


def pending_from_row(row: Sequence[Any]) -> PendingLogin:
    """A pending sign-in from a row in PENDING_COLUMNS order."""
    state_hash, provider, nonce, code_verifier, next_path, created_us = row
    return PendingLogin(
        str(state_hash),
        str(provider),
        str(nonce),
        str(code_verifier),
        str(next_path),
        int(created_us),
    )
