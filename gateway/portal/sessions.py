"""The citizens' sessions of the reference portal, in this process's memory.

A session ties a random cookie token to the subject the citizen proved to be (the IDCS),
for IDLE_TIMEOUT_S without a request and ABSOLUTE_TIMEOUT_S at most. Memory, not a
database: the reference portal runs as one process, and a restart only signs citizens
out. The IDCS never leaves this process except in calls to the gateway; the cookie holds
only the token, and the table is keyed by its SHA-256 (a memory dump yields no cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, replace

IDLE_TIMEOUT_S = 600
ABSOLUTE_TIMEOUT_S = 3600
MAX_SESSIONS = 100_000  # beyond: the oldest are dropped (a flood cannot exhaust memory)
_US = 1_000_000


@dataclass(frozen=True)
class CitizenSession:
    subject: str
    pseudonym: str  # the `sub` of the portal's calls for this session: random, not the IDCS
    csrf: str
    lang: str
    created_us: int
    last_seen_us: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """Thread-safe: the app reads and writes from its worker threads."""

    def __init__(self) -> None:
        self._by_hash: dict[str, CitizenSession] = {}
        self._lock = threading.Lock()

    def start(self, subject: str, lang: str, now_us: int) -> str:
        """A new session for `subject`; returns the cookie's token."""
        token = secrets.token_urlsafe(32)
        session = CitizenSession(
            subject,
            "citizen-session-" + secrets.token_hex(6),
            secrets.token_urlsafe(32),
            lang,
            now_us,
            now_us,
        )
        with self._lock:
            self._expire(now_us)
            while len(self._by_hash) >= MAX_SESSIONS:
                self._by_hash.pop(next(iter(self._by_hash)))
            self._by_hash[_digest(token)] = session
        return token

    def touch(
        self, token: str | None, now_us: int, lang: str | None = None
    ) -> CitizenSession | None:
        """The live session of `token` (its last request now, its language changed when
        given), or None when there is none or it expired."""
        if not token:
            return None
        key = _digest(token)
        with self._lock:
            found = self._by_hash.get(key)
            if found is None or _expired(found, now_us):
                self._by_hash.pop(key, None)
                return None
            touched = replace(found, last_seen_us=now_us, lang=lang or found.lang)
            self._by_hash[key] = touched
            return touched

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_hash.pop(_digest(token), None)

    def _expire(self, now_us: int) -> None:
        for key in [k for k, s in self._by_hash.items() if _expired(s, now_us)]:
            del self._by_hash[key]


def _expired(session: CitizenSession, now_us: int) -> bool:
    idle = now_us - session.last_seen_us >= IDLE_TIMEOUT_S * _US
    return idle or now_us - session.created_us >= ABSOLUTE_TIMEOUT_S * _US


def csrf_ok(session: CitizenSession, submitted: object) -> bool:
    """Whether a form carries the session's CSRF token (constant-time)."""
    return (
        isinstance(submitted, str)
        and submitted.isascii()
        and hmac.compare_digest(submitted, session.csrf)
    )
