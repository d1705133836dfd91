"""The ConsentRegistry's own rules, through the session gateway: which artefacts it refuses,
how revocation, reading, listing and checking behave, and consent for a person named by IDCS.

ANSS collects consents at its counters; MEN receives data under them and may check them.
Every test takes households no other test uses (from the end of the registry).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1.registry_pb2 import Subject
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.integration.test_consent import FULL, MANAGE, SCHOOL, grant, refusal, revoke
from tests.support import processes, registry_rows

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.FAILED_PRECONDITION

# Households from the end of the registry, past the few other session tests take there.
_offsets = itertools.count(40)


def household(registry_dir: Path) -> tuple[str, str, str]:
    """(household id, declarant IDCS, IDCS of another member) of an unused household."""
    with registry_rows.connect(registry_dir) as db:
        while True:
            hid, declarant = db.execute(
                "SELECT household_id, idcs FROM membership WHERE relationship = 1"
                " ORDER BY household_id DESC LIMIT 1 OFFSET ?",
                (next(_offsets),),
            ).fetchone()
            member = db.execute(
                "SELECT idcs FROM membership WHERE household_id = ? AND relationship <> 1"
                " ORDER BY idcs LIMIT 1",
                (hid,),
            ).fetchone()
            if member is not None:
                return str(hid), str(declarant), str(member[0])


@pytest.fixture
def anss(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS"), timeout=30) as c:
        yield c


@pytest.fixture
def men(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "MEN"), timeout=30) as c:
        yield c


def grant_claims(hid: str, grantor: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "act": "grant",
        "jti": secrets.token_urlsafe(12),
        "sub_kind": "household",
        "sub": hid,
        "grantor": grantor,
        "grantee": "MEN",
        "purposes": [SCHOOL],
        "scopes": FULL,
        "nbf": now - 10,
        "exp": now + 3600,
        "method": "counter",
    }
    return claims | extra


def send_grant(collector: JisrClient, artefact: str) -> cpb.Consent:
    request = cpb.GrantConsentRequest(purpose=MANAGE, artefact=artefact)
    return collector.consent(
        "GrantConsent", request, cpb.GrantConsentResponse, MANAGE
    ).message.consent


def send_revoke(collector: JisrClient, artefact: str) -> cpb.Consent:
    request = cpb.RevokeConsentRequest(purpose=MANAGE, artefact=artefact)
    return collector.consent(
        "RevokeConsent", request, cpb.RevokeConsentResponse, MANAGE
    ).message.consent


def revocation(collector: JisrClient, consent_id: str, grantor: str) -> str:
    claims = {"act": "revoke", "jti": secrets.token_urlsafe(12), "cid": consent_id}
    return collector.sign_artefact(claims | {"grantor": grantor, "method": "counter"})


def listed(
    collector: JisrClient, hid: str, page_size: int = 0, page_token: str = ""
) -> cpb.ListConsentsResponse:
    request = cpb.ListConsentsRequest(
        purpose=MANAGE,
        subject=Subject(household_id=hid),
        page_size=page_size,
        page_token=page_token,
    )
    return collector.consent("ListConsents", request, cpb.ListConsentsResponse, MANAGE).message


def check(
    men: JisrClient, subject: Subject, grantee: str = "MEN", scopes: tuple[str, ...] = ()
) -> cpb.CheckConsentResponse:
    request = cpb.CheckConsentRequest(
        purpose=SCHOOL,
        subject=subject,
        grantee=grantee,
        exchange_purpose=SCHOOL,
        scopes=list(scopes or FULL),
    )
    return men.consent("CheckConsent", request, cpb.CheckConsentResponse, SCHOOL).message


# --- grants --------------------------------------------------------------------------


def test_a_revocation_artefact_sent_as_a_grant_is_invalid(
    anss: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    artefact = revocation(anss, consent.consent_id, declarant)
    assert refusal(lambda: send_grant(anss, artefact)) == (INVALID, "CONSENT_ARTEFACT_INVALID")
    assert listed(anss, hid).consents[0].status == cpb.CONSENT_STATUS_ACTIVE


def test_the_same_grant_artefact_is_recorded_once(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant, _ = household(registry_dir)
    artefact = anss.sign_artefact(grant_claims(hid, declarant))
    first = send_grant(anss, artefact)
    again = refusal(lambda: send_grant(anss, artefact))
    assert again == (grpc.StatusCode.ALREADY_EXISTS, "CONSENT_CONFLICT")
    assert [c.consent_id for c in listed(anss, hid).consents] == [first.consent_id]


def test_a_grant_naming_an_unknown_scope_is_invalid(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant, _ = household(registry_dir)
    artefact = anss.sign_artefact(grant_claims(hid, declarant, scopes=["composition", "salary"]))
    assert refusal(lambda: send_grant(anss, artefact)) == (INVALID, "CONSENT_ARTEFACT_INVALID")
    assert list(listed(anss, hid).consents) == []


def test_a_person_consents_for_themself(anss: JisrClient, registry_dir: Path) -> None:
    _, _, member = household(registry_dir)
    artefact = anss.sign_artefact(
        grant_claims(member, member, sub_kind="person", scopes=["situation"])
    )
    consent = send_grant(anss, artefact)
    assert (consent.subject.idcs, consent.grantor_idcs) == (member, member)
    assert consent.status == cpb.CONSENT_STATUS_ACTIVE


def test_nobody_else_consents_for_a_person(anss: JisrClient, registry_dir: Path) -> None:
    _, declarant, member = household(registry_dir)
    artefact = anss.sign_artefact(grant_claims(member, declarant, sub_kind="person"))
    assert refusal(lambda: send_grant(anss, artefact)) == (DENIED, "GRANTOR_NOT_ENTITLED")


# --- revocations ---------------------------------------------------------------------


def test_a_grant_artefact_sent_as_a_revocation_is_invalid(
    anss: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    artefact = anss.sign_artefact(grant_claims(hid, declarant))
    assert refusal(lambda: send_revoke(anss, artefact)) == (INVALID, "CONSENT_ARTEFACT_INVALID")


def test_revoking_an_unknown_consent_is_not_found(anss: JisrClient, registry_dir: Path) -> None:
    _, declarant, _ = household(registry_dir)
    artefact = revocation(anss, "C" + "0" * 24, declarant)
    code, reason = refusal(lambda: send_revoke(anss, artefact))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")


def test_only_the_grantor_may_revoke(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant, member = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    artefact = revocation(anss, consent.consent_id, member)
    assert refusal(lambda: send_revoke(anss, artefact)) == (DENIED, "GRANTOR_NOT_ENTITLED")
    assert listed(anss, hid).consents[0].status == cpb.CONSENT_STATUS_ACTIVE


def test_revoking_a_revoked_consent_changes_nothing(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant, _ = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    first = revoke(anss, consent.consent_id, declarant)
    second = revoke(anss, consent.consent_id, declarant)
    assert second == first
    assert (second.revision, second.status) == (2, cpb.CONSENT_STATUS_REVOKED)


# --- reads ---------------------------------------------------------------------------


def test_getting_an_unknown_consent_is_not_found(anss: JisrClient) -> None:
    request = cpb.GetConsentRequest(purpose=MANAGE, consent_id="C" + "f" * 24)
    code, reason = refusal(
        lambda: anss.consent("GetConsent", request, cpb.GetConsentResponse, MANAGE)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")


def test_get_without_history_shows_the_latest_revision_only(
    anss: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    revoke(anss, consent.consent_id, declarant)
    request = cpb.GetConsentRequest(purpose=MANAGE, consent_id=consent.consent_id)
    shown = anss.consent("GetConsent", request, cpb.GetConsentResponse, MANAGE).message
    assert (shown.consent.revision, shown.consent.status) == (2, cpb.CONSENT_STATUS_REVOKED)
    assert list(shown.history) == []


def test_listing_pages_through_a_households_consents(anss: JisrClient, registry_dir: Path) -> None:
    hid, declarant, _ = household(registry_dir)
    granted = {grant(anss, hid, declarant, [scope]).consent_id for scope in FULL}
    first = listed(anss, hid, page_size=1)
    assert len(first.consents) == 1
    assert first.next_page_token
    second = listed(anss, hid, page_size=1, page_token=first.next_page_token)
    assert {first.consents[0].consent_id, second.consents[0].consent_id} == granted


@pytest.mark.parametrize("size", [501, 100_000])
def test_a_page_size_over_500_is_invalid(anss: JisrClient, registry_dir: Path, size: int) -> None:
    hid, _, _ = household(registry_dir)
    assert refusal(lambda: listed(anss, hid, page_size=size)) == (INVALID, "INVALID_PAGE")


# --- CheckConsent --------------------------------------------------------------------


def test_check_names_the_consent_that_covers_an_exchange(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    answer = check(men, Subject(household_id=hid))
    assert (answer.covered, answer.consent_id) == (True, consent.consent_id)
    assert list(answer.covered_scopes) == FULL


def test_check_without_a_consent_says_why_not(men: JisrClient, registry_dir: Path) -> None:
    hid, _, _ = household(registry_dir)
    answer = check(men, Subject(household_id=hid))
    assert (answer.covered, answer.consent_id, answer.reason) == (False, "", "CONSENT_MISSING")


def test_check_of_a_member_finds_the_households_consent(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, member = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    answer = check(men, Subject(idcs=member))
    assert (answer.covered, answer.consent_id) == (True, consent.consent_id)


def test_check_of_a_narrower_consent_is_not_covered(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    grant(anss, hid, declarant, ["composition"])
    answer = check(men, Subject(household_id=hid))
    assert (answer.covered, answer.reason) == (False, "CONSENT_SCOPE")


def test_only_the_grantee_or_a_collector_may_check(men: JisrClient, registry_dir: Path) -> None:
    hid, _, _ = household(registry_dir)
    code, reason = refusal(lambda: check(men, Subject(household_id=hid), grantee="CNSS"))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PURPOSE_NOT_ALLOWED")


# --- the exchange path ---------------------------------------------------------------


def test_a_households_consent_covers_a_member_named_by_idcs(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, member = household(registry_dir)
    consent = grant(anss, hid, declarant, ["eligibility"])
    answer = men.verify(SCHOOL, member, "ASD")
    assert answer.receipt["basis"] == consent.consent_id
    assert answer.message.decision.programme == "ASD"


def test_a_member_of_a_household_without_consent_is_refused(
    men: JisrClient, registry_dir: Path
) -> None:
    _, _, member = household(registry_dir)
    with pytest.raises(JisrError) as err:
        men.verify(SCHOOL, member, "ASD")
    assert (err.value.code, err.value.reason) == (DENIED, "CONSENT_MISSING")


def test_a_batch_keeps_an_invalid_subjects_own_error_beside_a_consented_one(
    anss: JisrClient, men: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    grant(anss, hid, declarant, ["eligibility"])
    (results,) = men.verify_batches(SCHOOL, "ASD", [[hid, "12"]])
    assert [r.WhichOneof("result") for r in results.results] == ["decision", "error"]
    assert results.results[1].error.code == INVALID.value[0]
