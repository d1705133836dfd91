"""Console sessions: a new session's tokens, when a session expires, the CSRF check."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.console import sessions
from gateway.console.sessions import ABSOLUTE_TIMEOUT_S, IDLE_TIMEOUT_S, Session

NOW_US = 1_750_000_000_000_000
S = 1_000_000


@pytest.fixture
def session() -> Session:
    return sessions.new_session("amina.b", "fr", NOW_US)[1]


def test_a_new_session_is_stored_under_the_hash_of_its_cookie_token() -> None:
    token, session = sessions.new_session("amina.b", "ar", NOW_US)
    assert session.token_hash == sessions.token_hash(token)
    assert token not in session.token_hash
    assert (session.username, session.lang) == ("amina.b", "ar")
    assert session.created_us == session.last_seen_us == NOW_US


def test_the_token_hash_is_the_sha256_hex_of_the_token() -> None:
    assert sessions.token_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_tokens_and_csrf_tokens_are_long_random_and_distinct() -> None:
    made = [sessions.new_session("amina.b", "fr", NOW_US) for _ in range(2)]
    (token_a, a), (token_b, b) = made
    assert len(token_a) >= 43  # 32 bytes, base64url
    assert len(a.csrf) >= 43
    assert len({token_a, token_b, a.csrf, b.csrf}) == 4


def test_a_fresh_session_has_not_expired(session: Session) -> None:
    assert not sessions.expired(session, NOW_US)


def test_a_session_expires_after_the_idle_timeout(session: Session) -> None:
    assert not sessions.expired(session, NOW_US + IDLE_TIMEOUT_S * S - 1)
    assert sessions.expired(session, NOW_US + IDLE_TIMEOUT_S * S)


def test_activity_keeps_a_session_alive_only_until_the_absolute_timeout(
    session: Session,
) -> None:
    end = NOW_US + ABSOLUTE_TIMEOUT_S * S
    active = replace(session, last_seen_us=end - 1)
    assert not sessions.expired(active, end - 1)
    assert sessions.expired(replace(session, last_seen_us=end), end)


def test_the_purge_cutoffs_agree_with_expired(session: Session) -> None:
    now = NOW_US + IDLE_TIMEOUT_S * S
    assert session.last_seen_us <= sessions.idle_cutoff_us(now)
    assert sessions.expired(session, now)
    later = NOW_US + ABSOLUTE_TIMEOUT_S * S
    assert session.created_us <= sessions.absolute_cutoff_us(later)


def test_the_sessions_own_csrf_token_is_accepted(session: Session) -> None:
    assert sessions.csrf_ok(session, session.csrf)


@pytest.mark.parametrize("submitted", [None, "", "wrong", "é" * 43])
def test_a_missing_wrong_or_non_ascii_csrf_token_is_refused(
    session: Session, submitted: str | None
) -> None:
    assert not sessions.csrf_ok(session, submitted)


def test_another_sessions_csrf_token_is_refused(session: Session) -> None:
    other = sessions.new_session("amina.b", "fr", NOW_US)[1]
    assert not sessions.csrf_ok(session, other.csrf)
