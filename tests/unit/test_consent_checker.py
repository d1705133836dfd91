"""Which consent covers an exchange (pure), and the revision chain of a consent."""

from __future__ import annotations

from dataclasses import replace

from consent.checker import Need, choose, window_start
from consent.model import ConsentRecord, Status, SubjectKind, UseCap, verify_history
from gateway.base.errors import Reason

NOW = 1_800_000_000


def consent(**changes: object) -> ConsentRecord:
    base = ConsentRecord(
        consent_id="C1",
        revision=1,
        subject_kind=SubjectKind.HOUSEHOLD,
        subject="H000000001",
        grantor="1234567897",
        grantee="MEN",
        purposes=("SCHOOL_SUPPORT",),
        scopes=("composition", "situation"),
        valid_from=NOW - 100,
        valid_until=NOW + 100,
        use_cap=None,
        status=Status.ACTIVE,
        collected_by="ANSS",
        collection_method="counter",
        artefact="jws",
        recorded_at=NOW - 100,
        prev_hash="",
    )
    return replace(base, **changes).sealed()  # type: ignore[arg-type]


NEED = Need("MEN", "SCHOOL_SUPPORT", frozenset({"composition", "situation"}), NOW)


def test_an_active_consent_covering_everything_is_chosen() -> None:
    verdict = choose([consent()], NEED, partial=False)
    assert verdict.consent is not None
    assert verdict.covered == NEED.scopes


def test_no_consent_is_missing() -> None:
    assert choose([], NEED, partial=False).reason == Reason.CONSENT_MISSING


def test_a_consent_for_another_grantee_or_purpose_does_not_count() -> None:
    others = [consent(grantee="CNSS"), consent(purposes=("AMO_ENROLMENT",))]
    assert choose(others, NEED, partial=False).reason == Reason.CONSENT_MISSING


def test_a_revoked_consent_is_refused_as_revoked() -> None:
    revoked = consent().revoked(NOW - 1)
    assert choose([revoked], NEED, partial=False).reason == Reason.CONSENT_REVOKED


def test_an_expired_consent_is_refused_as_expired() -> None:
    old = consent(valid_until=NOW)
    assert choose([old], NEED, partial=False).reason == Reason.CONSENT_EXPIRED


def test_a_narrower_consent_is_refused_unless_partial_disclosure_is_allowed() -> None:
    narrow = consent(scopes=("composition",))
    assert choose([narrow], NEED, partial=False).reason == Reason.CONSENT_SCOPE
    verdict = choose([narrow], NEED, partial=True)
    assert verdict.covered == frozenset({"composition"})


def test_full_cover_wins_over_partial_cover() -> None:
    narrow = consent(consent_id="C0", scopes=("composition",))
    verdict = choose([narrow, consent()], NEED, partial=True)
    assert verdict.consent is not None
    assert verdict.consent.consent_id == "C1"


def test_use_cap_windows_start_at_valid_from() -> None:
    capped = consent(use_cap=UseCap(max_uses=3, period_s=60))
    assert window_start(capped, NOW) == NOW - 100 + 60
    assert window_start(consent(), NOW) is None


def test_revision_history_verifies_and_catches_alteration() -> None:
    first = consent()
    second = first.revoked(NOW)
    assert verify_history([first, second]) is None
    altered = replace(second, grantee="CNSS")
    assert "revision 2" in (verify_history([first, altered]) or "")
    assert verify_history([second]) is not None
