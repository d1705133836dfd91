"""RegistryExchange answers over a real server process, as a ministry engineer sees it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1.records_pb2 import Relationship, VitalStatus
from gateway.sdk.client import Credentials, JisrClient, JisrError, error_from
from tests.support.identities import raw_call
from tests.support.processes import Proc
from tests.support.registry_rows import one

PURPOSE = "AMO_ENROLMENT"


def _reason(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    error = error_from(exc)
    return error.code, error.reason


def test_person_status_gives_vital_status_and_household_link(
    client: JisrClient, registry_dir: Path
) -> None:
    idcs = one(registry_dir, "SELECT idcs FROM membership WHERE relationship = 1")
    household = one(registry_dir, f"SELECT household_id FROM membership WHERE idcs = '{idcs}'")
    person = client.person_status(PURPOSE, idcs).message.person
    assert person.idcs == idcs
    assert person.vital_status in (
        VitalStatus.VITAL_STATUS_ALIVE,
        VitalStatus.VITAL_STATUS_DECEASED,
    )
    assert person.household_id == household
    assert person.relationship == Relationship.RELATIONSHIP_DECLARANT


def test_person_status_of_deceased_person_carries_death_date(
    client: JisrClient, registry_dir: Path
) -> None:
    idcs = one(registry_dir, "SELECT idcs FROM person WHERE vital_status = 2")
    person = client.person_status(PURPOSE, idcs).message.person
    assert person.vital_status == VitalStatus.VITAL_STATUS_DECEASED
    assert person.HasField("death_date")


def test_person_outside_rsu_has_no_household_link(client: JisrClient, registry_dir: Path) -> None:
    idcs = one(
        registry_dir,
        "SELECT idcs FROM person WHERE idcs NOT IN (SELECT idcs FROM membership)",
    )
    assert client.person_status(PURPOSE, idcs).message.person.household_id == ""


def test_household_status_by_member_equals_status_by_household_id(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household ORDER BY household_id LIMIT 1")
    member = one(registry_dir, f"SELECT idcs FROM membership WHERE household_id = '{hid}'")
    by_member = client.household_status(PURPOSE, member).message
    assert by_member == client.household_status(PURPOSE, hid).message


def test_household_status_lists_members_in_order_with_a_band_not_a_score(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household ORDER BY score LIMIT 1")
    household = client.household_status(PURPOSE, hid).message.household
    assert household.members[0].relationship == Relationship.RELATIONSHIP_DECLARANT
    assert all(m.HasField("birth_date") for m in household.members)
    assert household.score_band == "S1"
    assert "score" not in {f.name for f, _ in household.ListFields()}


def test_read_mask_returns_only_the_fields_asked_for(
    client: JisrClient, registry_dir: Path
) -> None:
    idcs = one(registry_dir, "SELECT idcs FROM membership LIMIT 1")
    request = pb.GetPersonStatusRequest(
        purpose=PURPOSE, idcs=idcs, read_mask=FieldMask(paths=["vital_status"])
    )
    answer = client.call("GetPersonStatus", request, pb.GetPersonStatusResponse, PURPOSE)
    person = answer.message.person
    assert [f.name for f, _ in person.ListFields()] == ["vital_status"]


def test_eligibility_decision_names_threshold_version_and_legal_reference(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household ORDER BY score LIMIT 1")
    decision = client.verify(PURPOSE, hid, "ASD", dt.date(2025, 6, 1)).message.decision
    assert decision.eligible
    assert list(decision.reasons) == [pb.REASON_CODE_SCORE_BELOW_THRESHOLD]
    assert decision.threshold_version == "ASD-2023"
    assert "2.23.1068" in decision.legal_reference
    assert (decision.as_of.year, decision.as_of.month, decision.as_of.day) == (2025, 6, 1)


def test_eligibility_before_a_programme_exists_is_refused_as_not_in_force(
    client: JisrClient, registry_dir: Path
) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    decision = client.verify(PURPOSE, hid, "ASD", dt.date(2020, 1, 1)).message.decision
    assert not decision.eligible
    assert list(decision.reasons) == [pb.REASON_CODE_PROGRAMME_NOT_IN_FORCE]


def test_deceased_subject_is_not_eligible(client: JisrClient, registry_dir: Path) -> None:
    idcs = one(registry_dir, "SELECT idcs FROM person WHERE vital_status = 2")
    decision = client.verify(PURPOSE, idcs, "AMOT").message.decision
    assert not decision.eligible
    assert list(decision.reasons) == [pb.REASON_CODE_SUBJECT_DECEASED]


def test_person_outside_rsu_is_not_eligible(client: JisrClient, registry_dir: Path) -> None:
    idcs = one(
        registry_dir,
        "SELECT idcs FROM person WHERE vital_status = 1"
        " AND idcs NOT IN (SELECT idcs FROM membership)",
    )
    decision = client.verify(PURPOSE, idcs, "ASD").message.decision
    assert list(decision.reasons) == [pb.REASON_CODE_NOT_REGISTERED_IN_RSU]


BAD_REQUESTS = [
    ("unknown subject", "person", "1234567897", grpc.StatusCode.NOT_FOUND, "SUBJECT_NOT_FOUND"),
    ("bad check digit", "person", "1234567890", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IDCS"),
    ("letters", "person", "12345abcde", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IDCS"),
    ("empty idcs", "person", "", grpc.StatusCode.INVALID_ARGUMENT, "MISSING_SUBJECT"),
    (
        "bad household id",
        "household",
        "H12",
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_HOUSEHOLD_ID",
    ),
    (
        "unknown household",
        "household",
        "H999999999",
        grpc.StatusCode.NOT_FOUND,
        "SUBJECT_NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("method", "value", "code", "reason"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_subject_is_refused_with_code_and_stable_reason(
    client: JisrClient, method: str, value: str, code: grpc.StatusCode, reason: str
) -> None:
    call = client.person_status if method == "person" else client.household_status
    with pytest.raises(JisrError) as err:
        call(PURPOSE, value)
    assert (err.value.code, err.value.reason) == (code, reason)


def test_unknown_programme_is_invalid_argument(client: JisrClient, registry_dir: Path) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with pytest.raises(JisrError) as err:
        client.verify(PURPOSE, hid, "NOPE")
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PROGRAMME",
    )


@pytest.mark.parametrize(
    ("purpose", "reason"),
    [
        ("", "MISSING_PURPOSE"),
        ("amo enrolment", "INVALID_PURPOSE"),
        ("ASD_ELIGIBILITY", "PURPOSE_MISMATCH"),
    ],
)
def test_request_without_the_signed_purpose_is_refused(
    client: JisrClient, registry_dir: Path, purpose: str, reason: str
) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    request = pb.VerifyEligibilityRequest(
        purpose=purpose, subject=pb.Subject(household_id=hid), programme="AMOT"
    )
    with pytest.raises(JisrError) as err:
        client.call("VerifyEligibility", request, pb.VerifyEligibilityResponse, PURPOSE)
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_impossible_as_of_date_is_invalid_argument(client: JisrClient, registry_dir: Path) -> None:
    hid = one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    request = pb.VerifyEligibilityRequest(
        purpose=PURPOSE, subject=pb.Subject(household_id=hid), programme="ASD"
    )
    request.as_of.year, request.as_of.month, request.as_of.day = 2025, 2, 30
    with pytest.raises(JisrError) as err:
        client.call("VerifyEligibility", request, pb.VerifyEligibilityResponse, PURPOSE)
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATE")


def test_unknown_read_mask_path_is_invalid_argument(client: JisrClient, registry_dir: Path) -> None:
    idcs = one(registry_dir, "SELECT idcs FROM membership LIMIT 1")
    request = pb.GetPersonStatusRequest(
        purpose=PURPOSE, idcs=idcs, read_mask=FieldMask(paths=["score"])
    )
    with pytest.raises(JisrError) as err:
        client.call("GetPersonStatus", request, pb.GetPersonStatusResponse, PURPOSE)
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD_MASK",
    )


def test_signed_bytes_that_are_not_a_request_are_invalid_argument(
    gateway: Proc, demo: Credentials
) -> None:
    body = b"\xff\xff\xff\xff"
    token = demo.signer.request_token("/jisr.v1.RegistryExchange/VerifyEligibility", PURPOSE, body)
    with pytest.raises(grpc.RpcError) as err:
        raw_call(gateway.target, demo, "VerifyEligibility", body, [token])
    assert _reason(err.value) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
