"""The console stores' part in signing in through an identity provider, on SQLite and on
PostgreSQL: links between accounts and providers' subjects, and pending sign-ins that are
used once, bounded in number and purged when expired."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.console import oidc
from gateway.console.oidc import STATE_TTL_S, PendingLogin
from gateway.console.store import (
    ConsoleStore,
    LinkTakenError,
    UnknownAccountError,
)
from tests.integration.test_console_store import (
    T0,
    ConsoleDatabase,
    console_database,
    officer,
)
from tests.support.threads import run_together

S = 1_000_000
ISSUER = "https://idp.cnss.ma/realms/agents"
OTHER_ISSUER = "https://login.example.org"
SUBJECT = "248289761001"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleDatabase]:
    with console_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def store(db: ConsoleDatabase) -> ConsoleStore:
    opened = db.open()
    opened.add_account(officer("amina.b"))
    opened.add_account(officer("karim.t", n=1))
    return opened


def pending(at_us: int = T0, provider: str = "cnss") -> tuple[str, PendingLogin]:
    return oidc.new_pending(provider, "/integrity", at_us)


def live_since(now_us: int) -> int:
    return oidc.pending_cutoff_us(now_us)


# Links.


def test_a_linked_subject_finds_its_account(store: ConsoleStore) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    assert store.oidc_account(ISSUER, SUBJECT) == officer("amina.b")


def test_a_subject_is_linked_at_its_issuer_only(store: ConsoleStore) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    assert store.oidc_account(OTHER_ISSUER, SUBJECT) is None
    assert store.oidc_account(ISSUER, SUBJECT.upper() + "x") is None


def test_a_linked_disabled_account_is_found_disabled(store: ConsoleStore) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    store.update_account(replace(officer("amina.b"), disabled=True))
    found = store.oidc_account(ISSUER, SUBJECT)
    assert found is not None
    assert found.disabled


def test_a_subject_linked_already_cannot_be_linked_to_another_account(
    store: ConsoleStore,
) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    with pytest.raises(LinkTakenError, match=r"^subject: linked already, to 'amina.b'"):
        store.link_oidc("karim.t", ISSUER, SUBJECT, T0)
    assert store.oidc_account(ISSUER, SUBJECT) == officer("amina.b")


def test_an_account_has_one_subject_per_issuer(store: ConsoleStore) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    with pytest.raises(LinkTakenError, match=r"^issuer: 'amina.b' has a link at "):
        store.link_oidc("amina.b", ISSUER, "another-subject", T0)
    store.link_oidc("amina.b", OTHER_ISSUER, "another-subject", T0)
    assert store.oidc_account(OTHER_ISSUER, "another-subject") == officer("amina.b")


def test_linking_an_unknown_account_raises(store: ConsoleStore) -> None:
    with pytest.raises(UnknownAccountError, match=r"^username: no account 'nobody'"):
        store.link_oidc("nobody", ISSUER, SUBJECT, T0)
    assert store.oidc_account(ISSUER, SUBJECT) is None


def test_unlinking_removes_the_link_at_that_issuer_only(store: ConsoleStore) -> None:
    store.link_oidc("amina.b", ISSUER, SUBJECT, T0)
    store.link_oidc("amina.b", OTHER_ISSUER, SUBJECT, T0)
    assert store.unlink_oidc("amina.b", ISSUER)
    assert store.oidc_account(ISSUER, SUBJECT) is None
    assert store.oidc_account(OTHER_ISSUER, SUBJECT) == officer("amina.b")
    assert not store.unlink_oidc("amina.b", ISSUER)


# Pending sign-ins.


def test_a_pending_sign_in_is_taken_back_as_saved(store: ConsoleStore) -> None:
    _, saved = pending()
    assert store.save_oidc_login(saved, live_since(T0), 10)
    assert store.take_oidc_login(saved.state_hash) == saved


def test_a_pending_sign_in_is_taken_once(store: ConsoleStore) -> None:
    _, saved = pending()
    store.save_oidc_login(saved, live_since(T0), 10)
    assert store.take_oidc_login(saved.state_hash) == saved
    assert store.take_oidc_login(saved.state_hash) is None


def test_of_eight_threads_taking_one_state_exactly_one_gets_it(db: ConsoleDatabase) -> None:
    _, saved = pending()
    db.open().save_oidc_login(saved, live_since(T0), 10)
    stores = [db.open() for _ in range(8)]
    taken = run_together(8, lambda i: stores[i].take_oidc_login(saved.state_hash))
    assert taken.count(saved) == 1, taken
    assert taken.count(None) == 7, taken


def test_an_unknown_state_has_no_pending_sign_in(store: ConsoleStore) -> None:
    assert store.take_oidc_login(oidc.state_hash("never-issued")) is None


def test_no_more_pending_sign_ins_than_the_limit_are_kept(store: ConsoleStore) -> None:
    kept = [pending(T0 + i)[1] for i in range(3)]
    assert all(store.save_oidc_login(p, live_since(T0 + 3), 3) for p in kept)
    refused = pending(T0 + 3)[1]
    assert not store.save_oidc_login(refused, live_since(T0 + 3), 3)
    assert store.take_oidc_login(refused.state_hash) is None


def test_expired_pending_sign_ins_do_not_count_towards_the_limit(store: ConsoleStore) -> None:
    old = pending(T0)[1]
    store.save_oidc_login(old, live_since(T0), 1)
    later = T0 + STATE_TTL_S * S
    fresh = pending(later)[1]
    assert store.save_oidc_login(fresh, live_since(later), 1)


def test_purging_forgets_expired_pending_sign_ins_only(store: ConsoleStore) -> None:
    now = T0 + STATE_TTL_S * S
    expired, live = pending(T0)[1], pending(T0 + 1)[1]
    for p in (expired, live):
        store.save_oidc_login(p, live_since(T0), 10)
    store.purge_expired(now)
    assert store.take_oidc_login(expired.state_hash) is None
    assert store.take_oidc_login(live.state_hash) == live
