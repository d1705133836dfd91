"""Whom a consent may name and for what: a grantee holding a consent-based grant of the
policy, for the purposes of those grants. Anything else is refused as INVALID_ARGUMENT
naming the artefact claim, and the message lists what is allowed, never what was given."""

from __future__ import annotations

import grpc
import pytest

from consent import grantees
from gateway.base.errors import ExchangeError, Reason
from gateway.security.policy import load_default
from gateway.services.edge import grpc_code

ALLOWED = grantees.consent_purposes(load_default().grants)


def refused(grantee: str, purposes: list[str]) -> ExchangeError:
    with pytest.raises(ExchangeError) as err:
        grantees.check(grantee, purposes, ALLOWED)
    return err.value


def test_the_shipped_policy_lets_men_receive_data_under_consent_for_school_support() -> None:
    allowed = grantees.consent_purposes(load_default().grants)
    assert allowed == {"MEN": frozenset({"SCHOOL_SUPPORT"})}


def test_a_consent_to_a_consent_based_grantee_for_its_purpose_is_accepted() -> None:
    grantees.check("MEN", ["SCHOOL_SUPPORT"], ALLOWED)


@pytest.mark.parametrize("grantee", ["NOBODY", "CNSS", "DEMO", ""])
def test_a_grantee_without_a_consent_based_grant_is_unknown(grantee: str) -> None:
    err = refused(grantee, ["SCHOOL_SUPPORT"])
    assert (grpc_code(err.reason), err.reason, err.metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.UNKNOWN_GRANTEE,
        {"field": "artefact.grantee"},
    )
    assert err.message == (
        "the grantee is not an institution the policy lets receive data under a citizen's"
        " consent (those are: MEN)"
    )


@pytest.mark.parametrize(
    "purposes",
    [["NO_SUCH_PURPOSE"], ["DATA_PROTECTION_AUDIT"], ["SCHOOL_SUPPORT", "AMO_ENROLMENT"]],
)
def test_a_purpose_outside_the_grantees_consent_based_grants_is_unknown(
    purposes: list[str],
) -> None:
    err = refused("MEN", purposes)
    assert (grpc_code(err.reason), err.reason, err.metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.UNKNOWN_PURPOSE,
        {"field": "artefact.purposes"},
    )
    assert err.message == (
        "MEN may receive data under a citizen's consent only for SCHOOL_SUPPORT; every"
        " purpose of the consent must be one of those"
    )


def test_a_grantee_typed_as_an_idcs_is_not_repeated_in_the_message() -> None:
    assert "1234567897" not in refused("1234567897", ["SCHOOL_SUPPORT"]).message
