"""An access record as the console shows it: its hash recomputed from what the gateway
sent, and a pasted receipt checked against the gateway's keys and the record, claim by
claim (pure, in memory: a gateway key made here)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit.record import AuditRecord
from gateway.console import records
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.security import pki
from gateway.security.receipts import Exchanged, ReceiptSigner
from gateway.services.audit_trail import to_message

GATEWAY_KEY = ec.generate_private_key(ec.SECP256R1())
GATEWAY_KID = pki.public_jwk(GATEWAY_KEY)["kid"]
JWKS: dict[str, Any] = {"keys": [pki.public_jwk(GATEWAY_KEY)]}
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())

CLAIMS = ("audit", "jti", "method", "purpose", "decision", "basis", "fields", "rh", "sh", "trace")


def stored() -> AuditRecord:
    """A permitted exchange, sealed as the trail stores it."""
    return AuditRecord(
        node="gw-a",
        seq=42,
        at_us=1_780_000_000_123_456,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        requester="CNSS",
        requester_sub="officer-7",
        method="/jisr.v1.RegistryExchange/GetHouseholdStatus",
        purpose="AMO_ENROLMENT",
        basis="loi-65-00-art-7",
        subjects=("a" * 64,),
        fields=("composition", "region"),
        decision="permit",
        reason="",
        rh="rh-base64url",
        sh="sh-base64url",
        jti="jti-1",
        part=0,
        latency_us=1_234,
        prev_hash="b" * 64,
    ).sealed()


@pytest.fixture
def record() -> apb.AccessRecord:
    return to_message(stored())


def exchanged(r: apb.AccessRecord, **changes: Any) -> Exchanged:
    """What the gateway's receipt for record `r` attests (with `changes`)."""
    told = Exchanged(
        jti=r.jti,
        rh=r.request_hash,
        sh=r.response_hash,
        method=r.method,
        purpose=r.purpose,
        decision=r.decision,
        fields=tuple(r.fields),
        basis=r.basis,
        audit=f"{r.node}:{r.seq}",
        trace=r.trace_id,
    )
    return replace(told, **changes)


def receipt(told: Exchanged, key: ec.EllipticCurvePrivateKey = GATEWAY_KEY) -> str:
    kid = pki.public_jwk(key)["kid"]
    return ReceiptSigner(key, kid, "jisr-gw").sign(told, now=1_780_000_000)


# Receipts.


def test_the_gateways_receipt_for_the_record_agrees_claim_by_claim(
    record: apb.AccessRecord,
) -> None:
    check = records.check_receipt(receipt(exchanged(record)), record, JWKS)
    assert check.signed
    assert check.problem == ""
    assert tuple(c.claim for c in check.claims) == CLAIMS
    assert [c.claim for c in check.claims if not c.agrees] == []
    assert check.agrees


def test_each_claim_shows_the_receipts_value_beside_the_records(
    record: apb.AccessRecord,
) -> None:
    check = records.check_receipt(receipt(exchanged(record)), record, JWKS)
    shown = {c.claim: (c.receipt, c.record) for c in check.claims}
    assert shown["audit"] == ("gw-a:42", "gw-a:42")
    assert shown["fields"] == ("composition, region", "composition, region")
    assert shown["purpose"] == ("AMO_ENROLMENT", "AMO_ENROLMENT")


def test_a_pasted_receipt_may_carry_surrounding_whitespace(record: apb.AccessRecord) -> None:
    check = records.check_receipt(f"\n  {receipt(exchanged(record))}  \n", record, JWKS)
    assert check.signed
    assert check.agrees


def test_a_receipt_telling_another_purpose_is_authentic_but_disagrees_on_it(
    record: apb.AccessRecord,
) -> None:
    told = exchanged(record, purpose="FRAUD_INVESTIGATION")
    check = records.check_receipt(receipt(told), record, JWKS)
    assert check.signed
    assert [c.claim for c in check.claims if not c.agrees] == ["purpose"]
    purpose = next(c for c in check.claims if c.claim == "purpose")
    assert (purpose.receipt, purpose.record) == ("FRAUD_INVESTIGATION", "AMO_ENROLMENT")
    assert not check.agrees


def test_a_receipt_naming_more_fields_than_were_disclosed_disagrees_on_fields(
    record: apb.AccessRecord,
) -> None:
    told = exchanged(record, fields=("composition", "region", "income"))
    check = records.check_receipt(receipt(told), record, JWKS)
    assert [c.claim for c in check.claims if not c.agrees] == ["fields"]
    assert not check.agrees


def test_a_receipt_for_another_record_disagrees_on_its_id(record: apb.AccessRecord) -> None:
    told = exchanged(record, audit="gw-a:43")
    check = records.check_receipt(receipt(told), record, JWKS)
    assert [c.claim for c in check.claims if not c.agrees] == ["audit"]


def test_a_receipt_signed_by_a_key_not_in_the_gateways_jwks_is_not_signed(
    record: apb.AccessRecord,
) -> None:
    check = records.check_receipt(receipt(exchanged(record), OTHER_KEY), record, JWKS)
    assert not check.signed
    assert "not in the gateway's JWKS" in check.problem
    assert check.claims == ()
    assert not check.agrees


def test_a_receipt_signed_by_another_key_under_the_gateways_kid_is_not_signed(
    record: apb.AccessRecord,
) -> None:
    forged = ReceiptSigner(OTHER_KEY, GATEWAY_KID, "jisr-gw").sign(exchanged(record))
    check = records.check_receipt(forged, record, JWKS)
    assert not check.signed
    assert "signature does not verify" in check.problem
    assert check.claims == ()
    assert not check.agrees


def test_text_that_is_not_a_receipt_is_not_signed(record: apb.AccessRecord) -> None:
    check = records.check_receipt("not a receipt", record, JWKS)
    assert not check.signed
    assert check.problem != ""
    assert not check.agrees


# The record's hash.


def test_the_record_the_gateway_sent_converts_back_to_the_stored_one() -> None:
    assert records.audit_record(to_message(stored())) == stored()


def test_the_hash_of_a_record_as_sealed_holds(record: apb.AccessRecord) -> None:
    assert records.hash_holds(record)


def test_the_hash_no_longer_holds_once_a_field_is_changed(record: apb.AccessRecord) -> None:
    record.purpose = "FRAUD_INVESTIGATION"
    assert not records.hash_holds(record)


def test_the_hash_no_longer_holds_once_a_subject_is_removed(record: apb.AccessRecord) -> None:
    del record.subject_hashes[:]
    assert not records.hash_holds(record)


def test_the_hash_no_longer_holds_once_the_time_is_moved_by_a_microsecond(
    record: apb.AccessRecord,
) -> None:
    record.time.nanos += 1_000
    assert not records.hash_holds(record)


def test_the_time_is_read_to_the_microsecond_in_utc(record: apb.AccessRecord) -> None:
    assert records.at_us(record) == 1_780_000_000_123_456
    assert records.moment(record).isoformat() == "2026-05-28T20:26:40.123456+00:00"


def test_what_an_exchange_did_not_disclose_is_the_rest_of_its_answer() -> None:
    hidden = records.withheld(
        "/jisr.v1.RegistryExchange/GetPersonStatus", ["vital_status", "death_date"]
    )
    assert "idcs" in hidden
    assert "vital_status" not in hidden
    assert "death_date" not in hidden


def test_a_disclosed_member_field_withholds_the_members_other_fields() -> None:
    hidden = records.withheld(
        "/jisr.v1.RegistryExchange/GetHouseholdStatus", ["members.relationship", "region"]
    )
    assert "members.idcs" in hidden
    assert "members.birth_date" in hidden
    assert "members.relationship" not in hidden
    assert "region" not in hidden


def test_a_refusal_or_an_unknown_method_lists_nothing_withheld() -> None:
    assert records.withheld("/jisr.v1.RegistryExchange/GetPersonStatus", []) == ()
    assert records.withheld("/jisr.v1.Elsewhere/Unknown", ["x"]) == ()
