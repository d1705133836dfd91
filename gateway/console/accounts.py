"""The console's officers: who may log in, how their secrets are kept, when they are locked.

Pure (no I/O): the store (gateway/console/store.py) keeps what this module makes, the web
app and `jisr console user` decide with it.

- Passwords are kept as argon2id hashes (argon2-cffi's defaults, which follow RFC 9106's
  advice and are re-tuned by new releases: `needs_rehash` says when a stored hash is
  older than them, so it can be replaced at the next successful login).
- The second factor is TOTP (RFC 6238, pyotp): 6 digits, 30 s steps, one step of clock
  drift either way accepted.
- An officer is known to the gateway only by `officer_id`, the request token's `sub`:
  random, never derived from the username, so the audit trail names no person and a
  renamed or re-created account is a new pseudonym.
- Throttling: MAX_FAILURES failed logins within FAILURE_WINDOW_S lock the account for
  LOCK_S after the last of them, whatever the password then offered (a guesser gets at
  most MAX_FAILURES tries per lock period, and learns nothing from a lock).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USERNAME = re.compile(r"[a-z0-9._-]{3,64}")
INSTITUTION = re.compile(r"[A-Z0-9_]{2,32}")
OFFICER_PREFIX = "officer-"
MIN_PASSWORD = 12
# Far above any pass phrase; it bounds the work an attacker can make a login do.
MAX_PASSWORD = 1024
TOTP_DIGITS = re.compile(r"[0-9]{6}")
TOTP_DRIFT_STEPS = 1  # pyotp's valid_window: the step before and after now are accepted

MAX_FAILURES = 5
FAILURE_WINDOW_S = 900
LOCK_S = 900
# How far back failures matter: a lock started by failures up to FAILURE_WINDOW_S before
# its last one lasts LOCK_S after it. Callers read failures_since(now - this).
FAILURE_LOOKBACK_S = FAILURE_WINDOW_S + LOCK_S

_US = 1_000_000
_HASHER = PasswordHasher()  # argon2id, the library's current parameters


@dataclass(frozen=True, slots=True)
class Account:
    """One officer's login to the console (see the module docstring for the fields' rules)."""

    username: str
    institution: str
    officer_id: str
    password_hash: str
    totp_secret: str | None
    disabled: bool
    created_us: int


class AccountError(ValueError):
    """An account or password that cannot be accepted; the message starts with the field
    at fault ("username: ...", "password: ..."), which a CLI or form can show as it is."""


class AccountExists(AccountError):  # noqa: N818 - the name the console codes against
    """A new account's username is taken."""


class UnknownAccountError(AccountError):
    """No account has that username."""


def new_account(
    username: str, institution: str, password: str, *, totp: bool, now_us: int
) -> Account:
    """A new, enabled account with a fresh pseudonym (and TOTP secret when `totp`); raises
    AccountError naming the first field that is not acceptable."""
    check_username(username)
    check_institution(institution)
    check_password_strength(password)
    return Account(
        username=username,
        institution=institution,
        officer_id=OFFICER_PREFIX + secrets.token_hex(8),
        password_hash=hash_password(password),
        totp_secret=pyotp.random_base32() if totp else None,
        disabled=False,
        created_us=now_us,
    )


def check_username(username: str) -> None:
    """Lower-case only, so that one person cannot hold "Amina" and "amina"."""
    if not USERNAME.fullmatch(username):
        raise AccountError(
            f"username: {username!r} is not 3 to 64 characters of a-z, 0-9, '.', '_', '-'"
        )


def check_institution(institution: str) -> None:
    """The institution's id as the gateway's PKI and policy name it (CNSS, CNDP...)."""
    if not INSTITUTION.fullmatch(institution):
        raise AccountError(
            f"institution: {institution!r} is not 2 to 32 characters of A-Z, 0-9, '_'"
        )


def check_password_strength(password: str) -> None:
    """Raise AccountError unless the password has MIN_PASSWORD to MAX_PASSWORD characters
    and mixes at least two classes of lower-case letters, upper-case letters, digits and
    anything else. Length matters most (a pass phrase of four words is fine); the class
    rule only refuses the likes of "aaaaaaaaaaaa" or "123456789012"."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: shorter than {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password: longer than {MAX_PASSWORD} characters")
    if len({_class_of(c) for c in password}) < 2:
        raise AccountError(
            "password: only one kind of character; mix lower-case, upper-case, digits"
            " or others (spaces, punctuation)"
        )


def _class_of(char: str) -> str:
    if char.isdigit():
        return "digit"
    if char.islower():
        return "lower"
    if char.isupper():
        return "upper"
    return "other"


def hash_password(password: str) -> str:
    """The argon2id encoded hash (salt and parameters included) to store."""
    return _HASHER.hash(password)


def password_ok(account: Account, password: str) -> bool:
    """Whether `password` is the account's, in time independent of where it differs
    (argon2 compares digests in constant time). A stored hash that is not argon2 at all
    verifies nothing: the login fails closed."""
    try:
        return _HASHER.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(account: Account) -> bool:
    """Whether the stored hash was made with weaker parameters than the current ones; call
    after a successful login and store `with_password` of the password just verified."""
    return _HASHER.check_needs_rehash(account.password_hash)


def with_password(account: Account, password: str) -> Account:
    """The account with a new password (strength checked), or the same one rehashed."""
    check_password_strength(password)
    return replace(account, password_hash=hash_password(password))


def with_totp(account: Account, enabled: bool) -> Account:
    """The account with a fresh TOTP secret (to enrol again), or without TOTP."""
    return replace(account, totp_secret=pyotp.random_base32() if enabled else None)


def totp_uri(account: Account, issuer: str = "Jisr console") -> str:
    """The otpauth:// URI an authenticator app enrols (usually shown as a QR code)."""
    if account.totp_secret is None:
        raise AccountError(f"totp: {account.username} has no TOTP secret")
    return pyotp.TOTP(account.totp_secret).provisioning_uri(
        name=account.username, issuer_name=issuer
    )


def totp_ok(account: Account, code: str, now: float) -> bool:
    """Whether `code` (6 ASCII digits) is the account's TOTP at `now` (seconds since the
    epoch) or one step either side. False, never an error, for an account without TOTP
    or a malformed code, so that a form field can be passed as typed.

    A code can be reused within its ~90 s of validity; with the password it still
    needs, that is the accepted risk of not storing the last step used."""
    if account.totp_secret is None or not TOTP_DIGITS.fullmatch(code):
        return False
    totp = pyotp.TOTP(account.totp_secret)
    return totp.verify(code, for_time=now, valid_window=TOTP_DRIFT_STEPS)


def locked_until_us(failure_times_us: Sequence[int], now_us: int) -> int | None:
    """When the lock ends, None when not locked at `now_us`.

    Locked when MAX_FAILURES failures fall within FAILURE_WINDOW_S, until the last of
    them + LOCK_S. The newest such run decides, so failures recorded during a lock (the
    web app records them) extend it: a guesser who keeps trying stays locked. Pass the
    failures of the last FAILURE_LOOKBACK_S at least; order does not matter."""
    times = sorted(failure_times_us)
    window_us = FAILURE_WINDOW_S * _US
    for end in range(len(times) - 1, MAX_FAILURES - 2, -1):
        if times[end] - times[end - MAX_FAILURES + 1] <= window_us:
            until = times[end] + LOCK_S * _US
            return until if now_us < until else None
    return None


def failures_since_us(now_us: int) -> int:
    """The `since_us` to read failures from for `locked_until_us` at `now_us`."""
    return now_us - FAILURE_LOOKBACK_S * _US
