"""Whom the audit says a call was about: every record names every subject its request
named, whatever the outcome, and every household it disclosed, whichever identifier the
caller used; a citizen's access report is therefore complete (docs/audit.md, "What a
report covers"). Against the session's gateway process (SQLite)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.integration.test_audit import _query
from tests.integration.test_consent import grant, revoke
from tests.support import processes, registry_rows

T = TypeVar("T", bound=tuple[str, ...])
PORTAL = "CITIZEN_ACCESS_REQUEST"
AUDIT = "jisr.v1.AuditTrail"

# Households no other test of the session looks at (offsets 3000+ of the registry).
_offsets = itertools.count(3000)


@pytest.fixture
def family(registry_dir: Path) -> tuple[str, str]:
    """(household id, one member's IDCS) of a household of two or more, fresh per test."""
    offset = next(_offsets)
    with registry_rows.connect(registry_dir) as db:
        (hid,) = db.execute(
            "SELECT household_id FROM membership GROUP BY household_id HAVING count(*) > 1"
            " ORDER BY household_id LIMIT 1 OFFSET ?",
            (offset,),
        ).fetchone()
        (idcs,) = db.execute(
            "SELECT idcs FROM membership WHERE household_id = ? ORDER BY relationship DESC",
            (hid,),
        ).fetchone()
    return str(hid), str(idcs)


@pytest.fixture
def clients(gateway: processes.Proc, pki_dir: Path) -> Iterator[dict[str, JisrClient]]:
    names = ("DEMO", "MS", "ANR", "CNDP")
    opened = {n: JisrClient(gateway.target, Credentials.from_pki(pki_dir, n)) for n in names}
    yield opened
    for client in opened.values():
        client.close()


def report(portal: JisrClient, subject: pb.Subject) -> list[tuple[str, str, str]]:
    """(institution, purpose, decision) of each entry of a subject's access report, the
    portal's own earlier reports left out (they are in it too, as they should be)."""
    answer = portal.call(
        "AccessReport",
        apb.AccessReportRequest(purpose=PORTAL, subject=subject),
        apb.AccessReportResponse,
        PORTAL,
        service=AUDIT,
    ).message
    return [(e.institution, e.purpose, e.decision) for e in answer.entries if e.purpose != PORTAL]


def added(before: list[T], after: list[T]) -> list[T]:
    """What `after` holds beyond `before` (other tests of the session may have asked about
    the same subjects earlier)."""
    return sorted((Counter(after) - Counter(before)).elements())


def household(hid: str) -> pb.Subject:
    return pb.Subject(household_id=hid)


def person(idcs: str) -> pb.Subject:
    return pb.Subject(idcs=idcs)


def test_a_policy_refusal_names_the_household_it_probed(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, _ = family
    with pytest.raises(JisrError) as refused:
        clients["MS"].household_status("HEALTH_COVERAGE_CHECK", hid)
    assert refused.value.reason == "PURPOSE_NOT_ALLOWED"
    assert ("MS", "HEALTH_COVERAGE_CHECK", "deny") in report(clients["ANR"], household(hid))


def test_a_malformed_identifier_is_named_by_the_marked_hash_of_its_text(
    clients: dict[str, JisrClient],
) -> None:
    with pytest.raises(JisrError) as refused:
        clients["MS"].person_status("HEALTH_COVERAGE_CHECK", "1234567890")
    assert refused.value.reason == "INVALID_IDCS"
    assert refused.value.receipt is not None
    jti = refused.value.receipt["jti"]
    (record,) = [r for r in _query(clients["CNDP"], requester="MS") if r.jti == jti]
    assert record.reason == "INVALID_IDCS"
    (named,) = record.subject_hashes
    assert named.startswith("malformed:")
    assert "1234567890" not in str(record)


def test_an_access_report_is_itself_in_the_subjects_trail(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, _ = family

    def trail() -> list[tuple[str, str]]:
        """The household's records, the regulator's own queries (which name it) left out."""
        records = _query(clients["CNDP"], subject=household(hid))
        return [(r.requester, r.method) for r in records if r.requester != "CNDP"]

    before = trail()
    report(clients["ANR"], household(hid))
    assert added(before, trail()) == [("ANR", "/jisr.v1.AuditTrail/AccessReport")]


@pytest.mark.parametrize(
    ("method", "purpose"),
    [("household_status", "AMO_ENROLMENT"), ("eligibility", "ASD_ELIGIBILITY")],
)
def test_a_household_asked_through_a_member_is_in_the_household_report(
    clients: dict[str, JisrClient], family: tuple[str, str], method: str, purpose: str
) -> None:
    hid, idcs = family
    demo = clients["DEMO"]
    before = report(clients["ANR"], household(hid))
    if method == "household_status":
        demo.household_status(purpose, idcs)
    else:
        demo.verify(purpose, idcs, "ASD")
    after = report(clients["ANR"], household(hid))
    assert added(before, after) == [("DEMO", purpose, "permit")]


def test_a_household_answer_is_in_each_members_report(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, idcs = family
    before = report(clients["ANR"], person(idcs))
    clients["DEMO"].household_status("AMO_ENROLMENT", hid)
    after = report(clients["ANR"], person(idcs))
    assert added(before, after) == [("DEMO", "AMO_ENROLMENT", "permit")]


def test_a_persons_status_is_in_their_report_and_their_households(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, idcs = family
    before_person = report(clients["ANR"], person(idcs))
    before_household = report(clients["ANR"], household(hid))
    clients["DEMO"].person_status("AMO_ENROLMENT", idcs)
    expected = [("DEMO", "AMO_ENROLMENT", "permit")]
    assert added(before_person, report(clients["ANR"], person(idcs))) == expected
    assert added(before_household, report(clients["ANR"], household(hid))) == expected


def test_a_batch_naming_a_member_is_in_the_household_report(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, idcs = family
    before = report(clients["ANR"], household(hid))
    results = list(clients["DEMO"].verify_batches("RECERTIFICATION", "ASD", [[idcs]]))
    assert results[0].results[0].HasField("decision")
    after = report(clients["ANR"], household(hid))
    assert added(before, after) == [("DEMO", "RECERTIFICATION", "permit")]


def test_a_malformed_subject_in_a_batch_is_named_in_its_part_record(
    clients: dict[str, JisrClient], family: tuple[str, str]
) -> None:
    hid, _ = family
    answer = list(clients["DEMO"].verify_batches("RECERTIFICATION", "ASD", [[hid, "H12"]]))
    assert len(answer[0].results) == 2
    (part,) = [
        r
        for r in _query(clients["CNDP"], subject=household(hid), page_size=20)
        if r.part == 1 and len(r.subject_hashes) == 2
    ][:1]
    assert sum(h.startswith("malformed:") for h in part.subject_hashes) == 1


def test_a_consent_grant_and_its_revocation_are_in_the_household_report(
    clients: dict[str, JisrClient], registry_dir: Path
) -> None:
    (hid, declarant), *_ = [
        (str(h), str(i))
        for h, i in registry_rows.connect(registry_dir).execute(
            "SELECT household_id, idcs FROM membership WHERE relationship = 1"
            " ORDER BY household_id DESC LIMIT 1 OFFSET 11"
        )
    ]
    before = report(clients["ANR"], household(hid))
    consent = grant(clients["DEMO"], hid, declarant, ["composition"])
    revoke(clients["DEMO"], consent.consent_id, declarant)
    assert added(before, report(clients["ANR"], household(hid))) == [
        ("DEMO", "CONSENT_MANAGEMENT", "permit"),
        ("DEMO", "CONSENT_MANAGEMENT", "permit"),
    ]
