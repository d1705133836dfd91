"""The console's attention list: each rule fires on its pattern and stays quiet just under
its threshold; a finding's links, its text and the list's order."""

from __future__ import annotations

import hashlib
import random

from gateway.console.attention import MAX_LINKS, Finding, Thresholds, findings
from gateway.pb.jisr.v1 import audit_pb2 as apb

T0 = 1_750_000_000  # seconds
MINUTE = 60
GET = "/jisr.v1.RegistryExchange/GetPersonStatus"
SMALL = Thresholds(
    burst_refusals=5,
    burst_window_min=10,
    purpose_share=0.02,
    purpose_max_records=3,
    purpose_min_history=50,
    subject_records=5,
    batch_subjects=10,
    hourly_records=10,
)
_seq = iter(range(1, 1_000_000))


def subject(n: int) -> str:
    return hashlib.sha256(f"person-{n}".encode()).hexdigest()


def record(
    at: int,
    *,
    requester: str = "CNSS",
    sub: str = "",
    purpose: str = "AMO_ENROLMENT",
    decision: str = "permit",
    reason: str = "",
    subjects: tuple[str, ...] | None = None,
    method: str = GET,
) -> apb.AccessRecord:
    seq = next(_seq)
    r = apb.AccessRecord(
        node="n1",
        seq=seq,
        requester=requester,
        requester_sub=sub,
        method=method,
        purpose=purpose,
        decision=decision,
        reason=reason,
        subject_hashes=subjects if subjects is not None else (subject(seq),),
    )
    r.time.seconds = T0 + at
    return r


def refusals(
    count: int, every: int, start: int = 0, requester: str = "CNSS"
) -> list[apb.AccessRecord]:
    return [
        record(
            start + i * every, requester=requester, decision="deny", reason="PURPOSE_NOT_ALLOWED"
        )
        for i in range(count)
    ]


def steady(count: int, purpose: str = "AMO_ENROLMENT", start: int = 0) -> list[apb.AccessRecord]:
    """Permitted records 15 minutes apart: never bulk under SMALL, even interleaved."""
    return [record(start + i * 15 * MINUTE, purpose=purpose) for i in range(count)]


def kinds(found: list[Finding]) -> list[str]:
    return [f.kind for f in found]


def test_refusals_at_the_threshold_within_the_window_are_a_burst() -> None:
    found = findings(refusals(5, every=2 * MINUTE), SMALL)
    assert kinds(found) == ["refusal_burst"]
    assert found[0].who == "CNSS"
    assert found[0].values() == {
        "count": 5,
        "peak": 5,
        "window": 10,
        "reason": "PURPOSE_NOT_ALLOWED",
    }


def test_refusals_one_short_of_a_burst_stay_quiet() -> None:
    assert findings(refusals(4, every=MINUTE), SMALL) == []


def test_refusals_spread_wider_than_the_window_are_no_burst() -> None:
    # 5 refusals over 12 minutes: no 10-minute window holds more than 4.
    assert findings(refusals(5, every=3 * MINUTE), SMALL) == []


def test_two_bursts_hours_apart_are_two_findings() -> None:
    rows = refusals(5, every=MINUTE) + refusals(6, every=MINUTE, start=180 * MINUTE)
    found = findings(rows, SMALL)
    assert [f.values()["count"] for f in found] == [6, 5]


def test_a_purpose_rare_for_an_institution_with_history_is_unusual() -> None:
    rows = steady(100)
    rows += steady(1, "CHILD_ALLOWANCE", start=5 * MINUTE)
    found = findings(rows, SMALL)
    assert kinds(found) == ["unusual_purpose"]
    assert found[0].who == "CNSS"
    assert found[0].values() == {
        "purpose": "CHILD_ALLOWANCE",
        "count": 1,
        "total": 101,
        "share": "2",
    }
    assert found[0].record_ids == (f"n1:{rows[-1].seq}",)


def test_a_rare_purpose_without_enough_history_stays_quiet() -> None:
    rows = steady(48) + steady(1, "CHILD_ALLOWANCE", start=5 * MINUTE)
    assert findings(rows, SMALL) == []


def test_a_purpose_at_the_share_is_usual() -> None:
    # 2 of 100 is 2 %: not under it.
    rows = steady(98) + steady(2, "CHILD_ALLOWANCE", start=5 * MINUTE)
    assert findings(rows, SMALL) == []


def test_a_rare_purpose_used_more_than_a_few_times_is_usual() -> None:
    rows = steady(400) + steady(4, "CHILD_ALLOWANCE", start=5 * MINUTE)
    assert findings(rows, SMALL) == []


def test_refusals_and_the_trails_own_reads_are_no_unusual_purpose() -> None:
    rows = steady(100)
    rows.append(record(5 * MINUTE, purpose="CHILD_ALLOWANCE", decision="deny"))
    audit = "/jisr.v1.AuditTrail/QueryAccess"
    rows.append(record(15 * MINUTE, purpose="DATA_PROTECTION_AUDIT", method=audit))
    assert findings(rows, SMALL) == []


def test_a_subject_looked_up_more_than_k_times_is_frequent() -> None:
    rows = [record(i * 600 * MINUTE, subjects=(subject(7),)) for i in range(5)]
    rows.append(record(5000 * MINUTE, requester="CNOPS", subjects=(subject(7),)))
    found = findings(rows, SMALL)
    assert kinds(found) == ["frequent_subject"]
    assert found[0].who == "CNSS, CNOPS"
    assert found[0].values() == {
        "subject": subject(7)[:8] + "…",
        "count": 6,
        "institutions": 2,
    }


def test_a_subject_looked_up_k_times_stays_quiet() -> None:
    rows = [record(i * 600 * MINUTE, subjects=(subject(7),)) for i in range(5)]
    assert findings(rows, SMALL) == []


def test_a_subject_named_in_batches_is_left_to_bulk_access() -> None:
    batch = tuple(subject(n) for n in range(10))
    rows = [record(i * 600 * MINUTE, subjects=batch) for i in range(6)]
    assert "frequent_subject" not in kinds(findings(rows, SMALL))


def test_no_full_subject_hash_is_in_a_findings_text() -> None:
    malformed = "malformed:" + subject(8)
    rows = [record(i * 600 * MINUTE, subjects=(subject(7), malformed)) for i in range(6)]
    found = findings(rows, SMALL)
    assert len(found) == 2
    for f in found:
        text = " ".join([f.who, f.message, *(str(v) for v in f.values().values()), *f.record_ids])
        assert subject(7) not in text
        assert subject(8) not in text
    assert {f.values()["subject"] for f in found} == {
        subject(7)[:8] + "…",
        "malformed:" + subject(8)[:8] + "…",
    }


def test_a_call_naming_many_subjects_is_bulk_access() -> None:
    rows = [record(0, sub="agent-4", subjects=tuple(subject(n) for n in range(10)))]
    found = findings(rows, SMALL)
    assert [(f.kind, f.message) for f in found] == [("bulk_access", "bulk_batch")]
    assert found[0].who == "agent-4 (CNSS)"
    assert found[0].values() == {"calls": 1, "subjects": 10, "threshold": 10}


def test_a_call_one_subject_short_of_bulk_stays_quiet() -> None:
    rows = [record(0, sub="agent-4", subjects=tuple(subject(n) for n in range(9)))]
    assert findings(rows, SMALL) == []


def test_many_records_by_one_officer_within_an_hour_are_bulk_access() -> None:
    rows = [record(i * 6 * MINUTE - 1, sub="agent-4") for i in range(1, 11)]
    found = findings(rows, SMALL)
    assert [(f.kind, f.message) for f in found] == [("bulk_access", "bulk_hourly")]
    assert found[0].values() == {"count": 10, "peak": 10}


def test_the_same_records_spread_over_more_than_an_hour_stay_quiet() -> None:
    # 10 records 7 minutes apart (63 minutes): no hour holds more than 9.
    rows = [record(i * 7 * MINUTE, sub="agent-4") for i in range(10)]
    assert findings(rows, SMALL) == []


def test_records_of_different_officers_are_not_added_up() -> None:
    rows = [record(i * MINUTE, sub=f"agent-{i % 2}") for i in range(18)]
    assert findings(rows, SMALL) == []


def test_record_links_are_capped_at_fifty_newest_first() -> None:
    rows = refusals(80, every=1)
    found = findings(rows, SMALL)
    assert MAX_LINKS == 50
    assert found[0].record_ids == tuple(f"n1:{r.seq}" for r in reversed(rows[-50:]))
    assert found[0].values()["count"] == 80
    assert (found[0].first.timestamp(), found[0].last.timestamp()) == (T0, T0 + 79)


def test_findings_are_ordered_by_kind_then_most_severe_first() -> None:
    rows = [
        *refusals(5, every=MINUTE, requester="ANAM"),
        *refusals(7, every=MINUTE, requester="CNSS"),
        record(0, sub="agent-4", subjects=tuple(subject(n) for n in range(20))),
        *[record(i * 600 * MINUTE, requester="CNOPS", subjects=(subject(7),)) for i in range(6)],
    ]
    found = findings(rows, SMALL)
    assert [(f.kind, f.who) for f in found] == [
        ("refusal_burst", "CNSS"),
        ("refusal_burst", "ANAM"),
        ("frequent_subject", "CNOPS"),
        ("bulk_access", "agent-4 (CNSS)"),
    ]


def test_the_order_does_not_depend_on_the_records_order() -> None:
    rows = [
        *refusals(5, every=MINUTE, requester="ANAM"),
        *refusals(5, every=MINUTE, requester="CNSS"),
        *[record(i * 600 * MINUTE, subjects=(subject(7),)) for i in range(6)],
        *[record(i * 600 * MINUTE, subjects=(subject(8),)) for i in range(6)],
    ]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert findings(shuffled, SMALL) == findings(rows, SMALL)
    assert findings(reversed(rows), SMALL) == findings(rows, SMALL)


def test_ordinary_traffic_raises_nothing_under_the_default_thresholds() -> None:
    # A week of three institutions' case work: a few lookups per person, the odd refusal,
    # two purposes each used steadily, no officer faster than one record a minute.
    rows = []
    for i in range(2000):
        requester = ("CNSS", "CNOPS", "ANAM")[i % 3]
        rows.append(
            record(
                i * 5 * MINUTE,
                requester=requester,
                sub=f"agent-{i % 7}",
                purpose=("AMO_ENROLMENT", "AMO_RENEWAL")[i % 2],
                decision="deny" if i % 50 == 0 else "permit",
                reason="CONSENT_REQUIRED" if i % 50 == 0 else "",
                subjects=(subject(i % 400),),
            )
        )
    assert findings(rows, Thresholds()) == []
