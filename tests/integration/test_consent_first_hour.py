"""A newcomer's first hour with consents: what a grant may name, and what a refusal says.
(docs/consent.md's commands run as written in tests/integration/test_documented_commands.py.)

ANSS (a collector) records consents on the session gateway; MEN receives data under them.
Households are taken from the middle of the registry, where no other test takes them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.cli.main import main
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1.registry_pb2 import Subject
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.integration.test_consent import FULL, MANAGE, SCHOOL, grant, revoke
from tests.support import processes, registry_rows

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.FAILED_PRECONDITION

_offsets = itertools.count(3_000)


def household(registry_dir: Path) -> tuple[str, str]:
    """(household id, declarant IDCS) of a household no other test uses."""
    with registry_rows.connect(registry_dir) as db:
        hid, declarant = db.execute(
            "SELECT household_id, idcs FROM membership WHERE relationship = 1"
            " ORDER BY household_id LIMIT 1 OFFSET ?",
            (next(_offsets),),
        ).fetchone()
    return str(hid), str(declarant)


def utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def refused(call: object) -> JisrError:
    with pytest.raises(JisrError) as err:
        call()  # type: ignore[operator]
    return err.value


def consents_of(collector: JisrClient, hid: str) -> list[cpb.Consent]:
    request = cpb.ListConsentsRequest(purpose=MANAGE, subject=Subject(household_id=hid))
    answer = collector.consent("ListConsents", request, cpb.ListConsentsResponse, MANAGE)
    return list(answer.message.consents)


@pytest.fixture
def anss(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS"), timeout=30) as c:
        yield c


@pytest.fixture
def men(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "MEN"), timeout=30) as c:
        yield c


# --- what a grant may name -----------------------------------------------------------


@pytest.mark.parametrize("grantee", ["NOBODY", "CNSS"])
def test_a_grant_to_an_institution_without_consent_based_grants_is_refused_naming_the_field(
    anss: JisrClient, registry_dir: Path, grantee: str
) -> None:
    hid, declarant = household(registry_dir)
    err = refused(lambda: grant(anss, hid, declarant, FULL, grantee=grantee))
    assert (err.code, err.reason, err.metadata) == (
        INVALID,
        "UNKNOWN_GRANTEE",
        {"field": "artefact.grantee"},
    )
    assert err.message == (
        "the grantee is not an institution the policy lets receive data under a citizen's"
        " consent (those are: MEN)"
    )


@pytest.mark.parametrize("purpose", ["NO_SUCH_PURPOSE", "DATA_PROTECTION_AUDIT"])
def test_a_grant_for_a_purpose_outside_the_grantees_consent_based_grants_is_refused(
    anss: JisrClient, registry_dir: Path, purpose: str
) -> None:
    hid, declarant = household(registry_dir)
    err = refused(lambda: grant(anss, hid, declarant, FULL, purposes=[purpose]))
    assert (err.code, err.reason, err.metadata) == (
        INVALID,
        "UNKNOWN_PURPOSE",
        {"field": "artefact.purposes"},
    )
    assert err.message == (
        "MEN may receive data under a citizen's consent only for SCHOOL_SUPPORT; every"
        " purpose of the consent must be one of those"
    )


def test_a_grant_naming_an_undefined_scope_lists_the_defined_ones_not_what_was_given(
    anss: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    err = refused(lambda: grant(anss, hid, declarant, ["composition", declarant]))
    assert (err.code, err.reason, err.metadata) == (
        INVALID,
        "CONSENT_ARTEFACT_INVALID",
        {"field": "artefact.scopes"},
    )
    assert err.message == (
        "scopes must be field groups the policy defines: civil, composition, eligibility,"
        " identity, situation, socio_economic, vital"
    )


def test_a_refused_grant_records_nothing(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant = household(registry_dir)
    refused(lambda: grant(anss, hid, declarant, FULL, grantee="NOBODY"))
    refused(lambda: grant(anss, hid, declarant, FULL, purposes=["AMO_ENROLMENT"]))
    assert consents_of(anss, hid) == []


def test_a_consent_that_ends_when_it_starts_is_refused_naming_exp(
    anss: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    now = int(time.time())
    err = refused(lambda: grant(anss, hid, declarant, FULL, nbf=now, exp=now))
    assert (err.code, err.reason, err.metadata) == (
        INVALID,
        "CONSENT_ARTEFACT_INVALID",
        {"field": "artefact.exp"},
    )


@pytest.mark.parametrize("days", ["0", "-1"])
def test_a_counter_grant_without_positive_days_says_to_give_at_least_one_day(
    gateway: processes.Proc,
    pki_dir: Path,
    registry_dir: Path,
    capsys: pytest.CaptureFixture[str],
    days: str,
) -> None:
    hid, declarant = household(registry_dir)
    counter = ["consent", "--target", gateway.target, "--pki-dir", str(pki_dir)]
    code = main(
        [
            *counter,
            *("--institution", "ANSS", "grant", hid, "--grantor", declarant, "--grantee", "MEN"),
            *("--purposes", SCHOOL, "--scopes", "composition", "--days", days),
        ]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (
        "jisr consent: INVALID_ARGUMENT CONSENT_ARTEFACT_INVALID: a consent must end after it"
        " starts: its end (exp) is not after its start (nbf); with `jisr consent grant`, give"
        " --days 1 or more\n"
    )


# --- what an exchange refused for consent says ------------------------------------------


def test_without_consent_the_refusal_says_none_lets_this_institution_receive_data(
    men: JisrClient, registry_dir: Path
) -> None:
    hid, _ = household(registry_dir)
    err = refused(lambda: men.household_status(SCHOOL, hid))
    assert (err.code, err.reason, err.message) == (
        DENIED,
        "CONSENT_MISSING",
        "no consent of the citizen (or of their household) lets MEN receive data for"
        " SCHOOL_SUPPORT",
    )


def test_a_too_narrow_consent_is_refused_naming_the_field_group_it_lacks(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    grant(anss, hid, declarant, FULL)
    err = refused(lambda: men.verify(SCHOOL, hid, "ASD"))
    assert (err.code, err.reason, err.message) == (
        DENIED,
        "CONSENT_SCOPE",
        "the consent to MEN for SCHOOL_SUPPORT does not cover eligibility, which this"
        " exchange would disclose",
    )


def test_a_revoked_consent_is_refused_saying_when_it_was_revoked(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    revoked = revoke(anss, grant(anss, hid, declarant, FULL).consent_id, declarant)
    err = refused(lambda: men.household_status(SCHOOL, hid))
    assert (err.code, err.reason, err.message) == (
        DENIED,
        "CONSENT_REVOKED",
        f"the consent to MEN for SCHOOL_SUPPORT was revoked on {utc(revoked.recorded_at.seconds)}",
    )


def test_an_expired_consent_is_refused_saying_when_it_ended(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    now = int(time.time())
    grant(anss, hid, declarant, FULL, nbf=now - 7_200, exp=now - 3_600)
    err = refused(lambda: men.household_status(SCHOOL, hid))
    assert (err.code, err.reason, err.message) == (
        DENIED,
        "CONSENT_EXPIRED",
        f"the consent to MEN for SCHOOL_SUPPORT expired on {utc(now - 3_600)}",
    )


def test_a_used_up_consent_is_refused_stating_its_cap_and_the_next_period(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    now = int(time.time())
    cap = {"max_uses": 1, "period_s": 86_400}
    grant(anss, hid, declarant, FULL, nbf=now - 10, exp=now + 7 * 86_400, use_cap=cap)
    men.household_status(SCHOOL, hid)
    err = refused(lambda: men.household_status(SCHOOL, hid))
    assert (err.code, err.reason, err.message) == (
        DENIED,
        "CONSENT_USE_EXCEEDED",
        "the consent to MEN for SCHOOL_SUPPORT allows 1 use every 1 day, all used; the next"
        f" period starts on {utc(now - 10 + 86_400)}",
    )
