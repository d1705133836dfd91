"""The console's accounts: what a new account is, how passwords and TOTP codes are checked,
and when failed logins lock an account. Pure functions, no store.

argon2 is slow on purpose (~0.15 s a hash), so one account is made per module and shared.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pyotp
import pytest
from argon2 import PasswordHasher

from gateway.console import accounts
from gateway.console.accounts import (
    FAILURE_WINDOW_S,
    LOCK_S,
    MAX_FAILURES,
    Account,
    AccountError,
)

PASSWORD = "correct horse Battery"
NOW_US = 1_750_000_000_000_000
S = 1_000_000  # one second in microseconds


@pytest.fixture(scope="module")
def account() -> Account:
    return accounts.new_account("amina.b", "CNSS", PASSWORD, totp=False, now_us=NOW_US)


@pytest.fixture(scope="module")
def with_totp(account: Account) -> Account:
    return accounts.with_totp(account, enabled=True)


# A new account.


def test_a_new_account_is_enabled_with_its_fields_as_given(account: Account) -> None:
    assert (account.username, account.institution, account.created_us) == (
        "amina.b",
        "CNSS",
        NOW_US,
    )
    assert account.disabled is False
    assert account.totp_secret is None


def test_the_password_is_stored_as_an_argon2id_hash_never_in_clear(account: Account) -> None:
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash


def test_the_officer_id_is_random_hex_and_not_derived_from_the_username() -> None:
    first = accounts.new_account("amina.b", "CNSS", PASSWORD, totp=False, now_us=NOW_US)
    second = accounts.new_account("amina.b", "CNSS", PASSWORD, totp=False, now_us=NOW_US)
    assert re.fullmatch(r"officer-[0-9a-f]{16}", first.officer_id)
    assert first.officer_id != second.officer_id
    assert "amina" not in first.officer_id


def test_an_account_made_with_totp_has_a_base32_secret() -> None:
    made = accounts.new_account("amina.b", "CNSS", PASSWORD, totp=True, now_us=NOW_US)
    assert made.totp_secret is not None
    assert re.fullmatch(r"[A-Z2-7]{32}", made.totp_secret)


@pytest.mark.parametrize("username", ["ab", "a" * 65, "Amina", "amina b", "amina@cnss", ""])
def test_a_bad_username_is_refused_naming_the_field(username: str) -> None:
    with pytest.raises(AccountError, match=r"^username: "):
        accounts.new_account(username, "CNSS", PASSWORD, totp=False, now_us=NOW_US)


@pytest.mark.parametrize("username", ["abc", "a" * 64, "amina.b", "a_b-c.9"])
def test_a_username_of_3_to_64_allowed_characters_is_accepted(username: str) -> None:
    accounts.check_username(username)


@pytest.mark.parametrize("institution", ["cnss", "C", "A" * 33, "CN-SS", ""])
def test_a_bad_institution_is_refused_naming_the_field(institution: str) -> None:
    with pytest.raises(AccountError, match=r"^institution: "):
        accounts.new_account("amina.b", institution, PASSWORD, totp=False, now_us=NOW_US)


def test_a_weak_password_is_refused_before_anything_is_hashed() -> None:
    with pytest.raises(AccountError, match=r"^password: "):
        accounts.new_account("amina.b", "CNSS", "short", totp=False, now_us=NOW_US)


# Password strength.


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Abcdefgh1!x", "shorter than 12"),
        ("x" * 1025 + "A", "longer than 1024"),
        ("abcdefghijkl", "only one kind"),
        ("123456789012", "only one kind"),
        ("ABCDEFGHIJKL", "only one kind"),
        ("!!!!!!!!!!!!", "only one kind"),
    ],
)
def test_a_password_too_short_too_long_or_of_one_kind_is_weak(password: str, problem: str) -> None:
    with pytest.raises(AccountError, match=f"^password: .*{problem}"):
        accounts.check_password_strength(password)


@pytest.mark.parametrize(
    "password", ["correct horse battery", "abcdefghijk1", "Tanger2030Tetouan", "مرحبا بكم 2026"]
)
def test_twelve_characters_of_two_kinds_are_strong_enough(password: str) -> None:
    accounts.check_password_strength(password)


# Passwords.


def test_the_right_password_is_accepted(account: Account) -> None:
    assert accounts.password_ok(account, PASSWORD)


def test_a_wrong_password_is_refused_without_an_error(account: Account) -> None:
    assert not accounts.password_ok(account, PASSWORD + "x")
    assert not accounts.password_ok(account, "")


def test_a_stored_hash_that_is_not_argon2_verifies_nothing(account: Account) -> None:
    assert not accounts.password_ok(replace(account, password_hash="plain"), "plain")


def test_a_hash_with_the_current_parameters_needs_no_rehash(account: Account) -> None:
    assert not accounts.needs_rehash(account)


def test_a_hash_with_weaker_parameters_needs_a_rehash(account: Account) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    old = replace(account, password_hash=weak)
    assert accounts.password_ok(old, PASSWORD)
    assert accounts.needs_rehash(old)
    assert not accounts.needs_rehash(accounts.with_password(old, PASSWORD))


def test_a_new_password_replaces_the_old_one(account: Account) -> None:
    changed = accounts.with_password(account, "another Pass phrase")
    assert accounts.password_ok(changed, "another Pass phrase")
    assert not accounts.password_ok(changed, PASSWORD)
    assert changed.officer_id == account.officer_id


def test_a_new_password_must_be_strong(account: Account) -> None:
    with pytest.raises(AccountError, match=r"^password: "):
        accounts.with_password(account, "weak")


# TOTP.


def test_the_current_code_and_one_step_either_side_are_accepted(with_totp: Account) -> None:
    assert with_totp.totp_secret is not None
    totp = pyotp.TOTP(with_totp.totp_secret)
    now = 1_750_000_015.0
    for offset in (-30, 0, 30):
        assert accounts.totp_ok(with_totp, totp.at(now + offset), now)


def test_a_code_two_steps_away_is_refused(with_totp: Account) -> None:
    assert with_totp.totp_secret is not None
    totp = pyotp.TOTP(with_totp.totp_secret)
    now = 1_750_000_015.0
    assert not accounts.totp_ok(with_totp, totp.at(now - 60), now)
    assert not accounts.totp_ok(with_totp, totp.at(now + 60), now)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12 345", "abcdef", "١٢٣٤٥٦"])
def test_a_malformed_code_is_refused_without_an_error(with_totp: Account, code: str) -> None:
    assert not accounts.totp_ok(with_totp, code, 1_750_000_015.0)


def test_an_account_without_totp_accepts_no_code(account: Account) -> None:
    assert not accounts.totp_ok(account, "123456", 1_750_000_015.0)


def test_the_provisioning_uri_names_the_issuer_the_user_and_the_secret(
    with_totp: Account,
) -> None:
    uri = accounts.totp_uri(with_totp)
    assert uri.startswith("otpauth://totp/Jisr%20console:amina.b?")
    assert f"secret={with_totp.totp_secret}" in uri
    assert pyotp.parse_uri(uri).secret == with_totp.totp_secret


def test_an_account_without_totp_has_no_provisioning_uri(account: Account) -> None:
    with pytest.raises(AccountError, match=r"^totp: "):
        accounts.totp_uri(account)


def test_enabling_totp_again_makes_a_new_secret_and_disabling_drops_it(
    with_totp: Account,
) -> None:
    again = accounts.with_totp(with_totp, enabled=True)
    assert again.totp_secret not in (None, with_totp.totp_secret)
    assert accounts.with_totp(with_totp, enabled=False).totp_secret is None


# Login throttling.


def failures(*seconds_before_now: int) -> list[int]:
    return [NOW_US - s * S for s in seconds_before_now]


def test_no_failures_means_no_lock() -> None:
    assert accounts.locked_until_us([], NOW_US) is None


def test_fewer_than_max_failures_do_not_lock() -> None:
    assert accounts.locked_until_us(failures(*range(MAX_FAILURES - 1)), NOW_US) is None


def test_max_failures_within_the_window_lock_until_the_last_plus_the_lock_time() -> None:
    times = failures(*[10 * i for i in range(MAX_FAILURES)])
    assert accounts.locked_until_us(times, NOW_US) == NOW_US + LOCK_S * S


def test_the_lock_holds_when_the_first_failures_are_older_than_the_window() -> None:
    """The window bounds the run of failures, not how far back the lock is judged."""
    spread = FAILURE_WINDOW_S // (MAX_FAILURES - 1)
    last = LOCK_S - 1  # the last failure is LOCK_S - 1 s ago: 1 s of lock left
    times = failures(*[last + spread * i for i in range(MAX_FAILURES)])
    assert accounts.locked_until_us(times, NOW_US) == NOW_US + S


def test_max_failures_spread_wider_than_the_window_do_not_lock() -> None:
    spread = FAILURE_WINDOW_S // (MAX_FAILURES - 1) + 1
    assert (
        accounts.locked_until_us(failures(*[spread * i for i in range(MAX_FAILURES)]), NOW_US)
        is None
    )


def test_the_lock_ends_lock_time_after_the_last_failure() -> None:
    times = failures(*[LOCK_S + i for i in range(MAX_FAILURES)])
    assert accounts.locked_until_us(times, NOW_US) is None


def test_a_failure_during_a_lock_extends_it() -> None:
    times = failures(100, 101, 102, 103, 104, 5)
    assert accounts.locked_until_us(times, NOW_US) == NOW_US - 5 * S + LOCK_S * S


def test_the_order_of_failures_does_not_matter() -> None:
    times = failures(*[10 * i for i in range(MAX_FAILURES)])
    assert accounts.locked_until_us(list(reversed(times)), NOW_US) == NOW_US + LOCK_S * S


def test_failures_are_read_far_enough_back_for_a_whole_lock() -> None:
    assert accounts.failures_since_us(NOW_US) == NOW_US - (FAILURE_WINDOW_S + LOCK_S) * S
