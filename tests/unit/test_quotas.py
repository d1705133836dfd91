"""An institution's daily quota (gateway/services/quotas.py), counted from the trail that
every process writes plus what this process admitted since its last reading."""

from __future__ import annotations

import logging

import pytest

from gateway.security.policy import PolicyError, Rate, parse
from gateway.services.quotas import DAY_S, Quotas
from gateway.services.rates import Rates
from tests.unit.test_policy import GRANT, ROLES_TABLE

NOON = 20_000 * DAY_S + DAY_S / 2  # a UTC noon


def _quotas(trail: dict[str, int], now: list[float], daily: int = 3) -> Quotas:
    return Quotas(
        {"CNSS": Rate(None, 1, daily)},
        lambda who, since: trail.get(who, 0),
        refresh_s=3600,
        clock=lambda: now[0],
    )


def test_calls_beyond_the_quota_wait_until_midnight() -> None:
    now = [NOON]
    quotas = _quotas({}, now)
    assert [quotas.admit("CNSS") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert quotas.admit("CNSS") == pytest.approx(DAY_S / 2)
    quotas.close()


def test_the_other_processes_calls_count_once_read_from_the_trail() -> None:
    now, trail = [NOON], {"CNSS": 0}
    quotas = _quotas(trail, now)
    assert quotas.admit("CNSS") == 0.0
    trail["CNSS"] = 3  # this call's record and two of another process
    quotas.refresh()
    assert quotas.admit("CNSS") > 0
    quotas.close()


def test_a_new_day_starts_the_count_again() -> None:
    now = [NOON]
    quotas = _quotas({}, now, daily=1)
    assert quotas.admit("CNSS") == 0.0
    assert quotas.admit("CNSS") > 0
    now[0] += DAY_S
    assert quotas.admit("CNSS") == 0.0
    quotas.close()


def test_an_unreadable_trail_keeps_the_local_count() -> None:
    def down(who: str, since: int) -> int:
        raise ConnectionError("the database is gone")

    now = [NOON]
    quotas = Quotas({"CNSS": Rate(None, 1, 2)}, down, refresh_s=3600, clock=lambda: now[0])
    assert [quotas.admit("CNSS") > 0 for _ in range(3)] == [False, False, True]
    quotas.close()


def test_an_unreadable_trail_is_logged_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    up = [False]

    def count(who: str, since: int) -> int:
        if not up[0]:
            raise ConnectionError("the database is gone")
        return 0

    quotas = Quotas({"CNSS": Rate(None, 1, 2)}, count, refresh_s=3600, clock=lambda: NOON)
    caplog.set_level(logging.INFO, logger="jisr.quotas")
    for _ in range(5):
        quotas.refresh()
    up[0] = True
    quotas.refresh()
    quotas.close()
    said = [r.getMessage() for r in caplog.records if r.name == "jisr.quotas"]
    assert said == ["quota count unavailable", "quota count available again"]


def test_an_institution_without_a_quota_passes_freely() -> None:
    quotas = _quotas({}, [NOON])
    assert all(quotas.admit("ANSS") == 0.0 for _ in range(100))
    quotas.close()


def test_a_quota_alone_sets_no_rate() -> None:
    policy = parse(ROLES_TABLE + GRANT + "\n[limits.CNSS]\ncalls_per_day = 5\n", "policy.toml")
    assert policy.rates["CNSS"] == Rate(None, 1, 5)
    assert all(Rates(policy.rates).admit("CNSS") == 0.0 for _ in range(50))


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("[limits.CNSS]\nburst = 5\n", "give calls_per_second, calls_per_day or both"),
        ("[limits.CNSS]\ncalls_per_day = 0\n", "calls_per_day: must be a whole number"),
        ("[limits.CNSS]\ncalls_per_day = 2.5\n", "calls_per_day: must be a whole number"),
    ],
)
def test_a_bad_quota_is_refused_naming_it(table: str, said: str) -> None:
    with pytest.raises(PolicyError, match=said):
        parse(ROLES_TABLE + GRANT + "\n" + table, "policy.toml")
