"""What each consent refusal says: one message per reason, naming what is wrong with the
consent (scopes it lacks, when it was revoked or ends, its use cap) and never the subject,
its grantor or registry data."""

from __future__ import annotations

from dataclasses import replace

from consent import messages
from consent.checker import Need, choose, window_start
from consent.model import ConsentRecord, Status, SubjectKind, UseCap
from gateway.base.errors import Reason

NOW = 1_800_000_000  # 2027-01-15 08:00 UTC
DAY = 86_400
HOUSEHOLD = "H000000001"
GRANTOR = "1234567897"
NEED = Need("MEN", "SCHOOL_SUPPORT", frozenset({"composition", "situation"}), NOW)


def consent(**changes: object) -> ConsentRecord:
    base = ConsentRecord(
        consent_id="C1",
        revision=1,
        subject_kind=SubjectKind.HOUSEHOLD,
        subject=HOUSEHOLD,
        grantor=GRANTOR,
        grantee="MEN",
        purposes=("SCHOOL_SUPPORT",),
        scopes=("composition", "situation"),
        valid_from=NOW - DAY,
        valid_until=NOW + 365 * DAY,
        use_cap=None,
        status=Status.ACTIVE,
        collected_by="ANSS",
        collection_method="counter",
        artefact="jws",
        recorded_at=NOW - DAY,
        prev_hash="",
    )
    return replace(base, **changes).sealed()  # type: ignore[arg-type]


def refusal(*records: ConsentRecord) -> tuple[Reason | None, str]:
    verdict = choose(records, NEED, partial=False)
    return verdict.reason, messages.refused(verdict, NEED)


def test_no_consent_says_none_lets_this_institution_receive_data_for_this_purpose() -> None:
    assert refusal() == (
        Reason.CONSENT_MISSING,
        "no consent of the citizen (or of their household) lets MEN receive data for"
        " SCHOOL_SUPPORT",
    )


def test_a_too_narrow_consent_names_the_field_groups_it_lacks() -> None:
    assert refusal(consent(scopes=("composition",))) == (
        Reason.CONSENT_SCOPE,
        "the consent to MEN for SCHOOL_SUPPORT does not cover situation, which this exchange"
        " would disclose",
    )


def test_a_revoked_consent_says_when_it_was_revoked() -> None:
    assert refusal(consent().revoked(NOW - 3_600)) == (
        Reason.CONSENT_REVOKED,
        "the consent to MEN for SCHOOL_SUPPORT was revoked on 2027-01-15 07:00 UTC",
    )


def test_the_latest_revocation_is_the_one_named() -> None:
    first = consent(consent_id="C1").revoked(NOW - 2 * DAY)
    second = consent(consent_id="C2").revoked(NOW - 3_600)
    assert refusal(first, second)[1].endswith("was revoked on 2027-01-15 07:00 UTC")


def test_an_expired_consent_says_when_it_ended() -> None:
    assert refusal(consent(valid_until=NOW - DAY)) == (
        Reason.CONSENT_EXPIRED,
        "the consent to MEN for SCHOOL_SUPPORT expired on 2027-01-14 08:00 UTC",
    )


def test_a_consent_not_yet_in_force_says_when_it_starts() -> None:
    assert refusal(consent(valid_from=NOW + DAY)) == (
        Reason.CONSENT_EXPIRED,
        "the consent to MEN for SCHOOL_SUPPORT is not valid before 2027-01-16 08:00 UTC",
    )


def test_a_used_up_consent_states_its_cap_and_when_the_next_period_starts() -> None:
    capped = consent(use_cap=UseCap(max_uses=2, period_s=30 * DAY))
    cap = capped.use_cap
    assert cap is not None
    start = window_start(capped, NOW)
    assert start is not None
    assert messages.used_up(NEED, capped, cap, start) == (
        "the consent to MEN for SCHOOL_SUPPORT allows 2 uses every 30 days, all used; the"
        " next period starts on 2027-02-13 08:00 UTC"
    )


def test_a_used_up_consent_ending_before_another_period_says_when_it_ends() -> None:
    capped = consent(use_cap=UseCap(max_uses=1, period_s=3_600), valid_until=NOW + 60)
    cap = capped.use_cap
    assert cap is not None
    assert messages.used_up(NEED, capped, cap, NOW) == (
        "the consent to MEN for SCHOOL_SUPPORT allows 1 use every 1 hour, all used; it ends"
        " on 2027-01-15 08:01 UTC without another period"
    )


def test_every_refusal_has_its_own_message() -> None:
    capped = consent(use_cap=UseCap(max_uses=1, period_s=DAY))
    assert capped.use_cap is not None
    said = [
        refusal()[1],
        refusal(consent(scopes=("composition",)))[1],
        refusal(consent().revoked(NOW))[1],
        refusal(consent(valid_until=NOW))[1],
        messages.used_up(NEED, capped, capped.use_cap, NOW),
    ]
    assert len(set(said)) == len(said)


def test_no_message_names_the_subject_or_the_grantor() -> None:
    said = [
        refusal()[1],
        refusal(consent(scopes=("composition",)))[1],
        refusal(consent().revoked(NOW))[1],
        refusal(consent(valid_until=NOW))[1],
        refusal(consent(valid_from=NOW + 1))[1],
    ]
    assert not [m for m in said if HOUSEHOLD in m or GRANTOR in m]


def test_periods_read_in_days_hours_or_seconds() -> None:
    assert [messages.duration(s) for s in (DAY, 7 * DAY, 3_600, 7_200, 90)] == [
        "1 day",
        "7 days",
        "1 hour",
        "2 hours",
        "90 s",
    ]
