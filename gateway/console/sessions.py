"""Console sessions: what the cookie's token stands for, and when it stops standing for it.

Pure (no I/O). The cookie holds a random token; the store keeps only its SHA-256, so a
copy of the database (a backup, a DBA's query) yields no cookie that logs anyone in.
A session ends after IDLE_TIMEOUT_S without a request, and ABSOLUTE_TIMEOUT_S after login
whatever happens (a stolen cookie is worth a working day at most). Each session has its
own CSRF token for its forms, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

IDLE_TIMEOUT_S = 900
ABSOLUTE_TIMEOUT_S = 8 * 3600
TOKEN_BYTES = 32  # 256 bits: not guessable, and not worth brute-forcing through the hash

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Session:
    """One login's session, as stored (keyed by the hash of its cookie token)."""

    token_hash: str
    username: str
    csrf: str
    created_us: int
    last_seen_us: int
    lang: str


def new_session(username: str, lang: str, now_us: int) -> tuple[str, Session]:
    """A fresh session: (the cookie's token, given to the browser only, and the session
    to store). `lang` is taken as given: the web app picks it (gateway/console/i18n.py)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session = Session(
        token_hash=token_hash(token),
        username=username,
        csrf=secrets.token_urlsafe(TOKEN_BYTES),
        created_us=now_us,
        last_seen_us=now_us,
        lang=lang,
    )
    return token, session


def token_hash(token: str) -> str:
    """The SHA-256 hex of a cookie token: how the store finds the session. A plain hash
    suffices (no salt, no slow hash) because the token is random and 256 bits long."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def expired(session: Session, now_us: int) -> bool:
    """Whether the session is over: idle too long, or too old since login."""
    idle = now_us - session.last_seen_us >= IDLE_TIMEOUT_S * _US
    too_old = now_us - session.created_us >= ABSOLUTE_TIMEOUT_S * _US
    return idle or too_old


def csrf_ok(session: Session, submitted: str | None) -> bool:
    """Whether a form carries this session's CSRF token (constant-time comparison; a
    missing or non-ASCII value is simply wrong)."""
    if not submitted or not submitted.isascii():
        return False
    return hmac.compare_digest(submitted, session.csrf)


def idle_cutoff_us(now_us: int) -> int:
    """Sessions last seen before this are idle-expired at `now_us` (for purging)."""
    return now_us - IDLE_TIMEOUT_S * _US


def absolute_cutoff_us(now_us: int) -> int:
    """Sessions created before this are too old at `now_us` (for purging)."""
    return now_us - ABSOLUTE_TIMEOUT_S * _US
