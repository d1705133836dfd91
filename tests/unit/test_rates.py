"""An institution's rate of calls (the policy's [limits.X], gateway/services/rates.py) and
the RetryInfo that tells a refused caller when to come back."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.base.status import rich_status
from gateway.security.policy import PolicyError, Rate, parse
from gateway.services.rates import Rates
from tests.unit.test_policy import GRANT, ROLES_TABLE


def test_a_burst_is_admitted_then_the_next_call_waits_for_its_token() -> None:
    now = [0.0]
    rates = Rates({"CNSS": Rate(2.0, 3)}, clock=lambda: now[0])
    assert [rates.admit("CNSS") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.admit("CNSS") == pytest.approx(0.5)
    now[0] = 0.5
    assert rates.admit("CNSS") == 0.0


def test_tokens_never_pile_up_beyond_the_burst() -> None:
    now = [0.0]
    rates = Rates({"CNSS": Rate(1.0, 2)}, clock=lambda: now[0])
    now[0] = 3600.0
    assert [rates.admit("CNSS") > 0 for _ in range(3)] == [False, False, True]


def test_an_institution_without_limits_passes_freely() -> None:
    rates = Rates({"CNSS": Rate(1.0, 1)})
    assert all(rates.admit("ANSS") == 0.0 for _ in range(1000))


def test_the_policy_reads_limits_with_a_default_burst() -> None:
    policy = parse(ROLES_TABLE + GRANT + "\n[limits.CNSS]\ncalls_per_second = 0.5\n", "policy.toml")
    assert policy.rates == {"CNSS": Rate(0.5, 1)}


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("[limits.CNSS]\ncalls_per_second = 0\n", "limits.CNSS.calls_per_second"),
        ("[limits.CNSS]\ncalls_per_second = true\n", "limits.CNSS.calls_per_second"),
        ("[limits.CNSS]\ncalls_per_second = 5\nburst = 0\n", "limits.CNSS.burst"),
        ("[limits.CNSS]\ncalls_per_second = 5\nburst = 2.5\n", "limits.CNSS.burst"),
        ("[limits.CNSS]\ncalls_per_second = 5\nper = 1\n", "limits.CNSS.per: unknown key"),
        ("[limits.cnss]\ncalls_per_second = 5\n", "limits.cnss"),
        ("[limits]\nCNSS = 5\n", "limits.CNSS: must be a table"),
    ],
)
def test_a_bad_limit_is_refused_naming_it(table: str, said: str) -> None:
    with pytest.raises(PolicyError, match=said.replace(".", r"\.")):
        parse(ROLES_TABLE + GRANT + "\n" + table, "policy.toml")


def _retry_delay(error: ExchangeError) -> float | None:
    for detail in rich_status(error).details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
    return None


def test_a_rate_limited_refusal_says_when_to_retry() -> None:
    error = ExchangeError(Reason.RATE_LIMITED, "spent", retry_after_s=2.25)
    assert _retry_delay(error) == pytest.approx(2.25)


def test_an_unavailable_store_says_retry_in_a_second() -> None:
    assert _retry_delay(ExchangeError(Reason.AUDIT_UNAVAILABLE, "down")) == 1.0


def test_a_refusal_a_retry_cannot_cure_carries_no_retry_info() -> None:
    assert _retry_delay(invalid(Reason.INVALID_IDCS, "bad", "idcs")) is None
