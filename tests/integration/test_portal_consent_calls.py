"""A citizen's portal and consents, through the session gateway: ANR (role citizen_portal)
lists every consent about a person and their household, revokes those the person gave,
and may neither grant one nor revoke another's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.consents import Consents
from tests.integration.test_consent import FULL, grant, refusal
from tests.integration.test_consent_registry_calls import (
    DENIED,
    INVALID,
    grant_claims,
    household,
    send_grant,
)
from tests.support import processes

pytestmark = pytest.mark.integration


@pytest.fixture
def anss(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS"), timeout=30) as c:
        yield c


@pytest.fixture
def anr(gateway: processes.Proc, pki_dir: Path) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANR"), timeout=30) as c:
        yield c


def test_a_portal_lists_a_persons_consents_and_their_households(
    anss: JisrClient, anr: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    own = send_grant(
        anss, anss.sign_artefact(grant_claims(declarant, declarant, sub_kind="person"))
    )
    theirs = grant(anss, hid, declarant, FULL)
    listed = list(Consents(anr).every(declarant, with_household=True))
    assert [c.consent_id for c in listed] == [own.consent_id, theirs.consent_id]


def test_a_household_member_sees_the_households_consents_too(
    anss: JisrClient, anr: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, member = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    listed = list(Consents(anr).every(member, with_household=True))
    assert [(c.consent_id, c.grantor_idcs) for c in listed] == [(consent.consent_id, declarant)]


def test_the_citizen_revokes_a_consent_they_gave_through_the_portal(
    anss: JisrClient, anr: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, _ = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    revoked = Consents(anr).revoke(consent.consent_id, declarant).message.consent
    assert (revoked.status, revoked.revision) == (cpb.CONSENT_STATUS_REVOKED, 2)
    assert revoked.collected_by == "ANSS"


def test_a_portal_cannot_revoke_for_a_member_who_did_not_give_the_consent(
    anss: JisrClient, anr: JisrClient, registry_dir: Path
) -> None:
    hid, declarant, member = household(registry_dir)
    consent = grant(anss, hid, declarant, FULL)
    call = lambda: Consents(anr).revoke(consent.consent_id, member)  # noqa: E731
    assert refusal(call) == (DENIED, "GRANTOR_NOT_ENTITLED")


def test_a_portal_may_not_grant_a_consent(anr: JisrClient, registry_dir: Path) -> None:
    hid, declarant, _ = household(registry_dir)
    artefact = anr.sign_artefact(grant_claims(hid, declarant))
    code, reason = refusal(lambda: send_grant(anr, artefact))
    assert reason in ("NOT_A_CONSENT_COLLECTOR", "PURPOSE_NOT_ALLOWED")
    assert code.name in ("PERMISSION_DENIED", "FAILED_PRECONDITION")


def test_with_household_needs_a_person(anr: JisrClient, registry_dir: Path) -> None:
    hid, _, _ = household(registry_dir)
    call = lambda: Consents(anr).page(hid, with_household=True)  # noqa: E731
    assert refusal(call) == (INVALID, "MALFORMED_REQUEST")


def test_a_forged_page_token_is_refused(anr: JisrClient, registry_dir: Path) -> None:
    _, declarant, _ = household(registry_dir)
    call = lambda: Consents(anr).page(declarant, with_household=True, page_token="x.abc")  # noqa: E731
    assert refusal(call) == (INVALID, "INVALID_PAGE")
