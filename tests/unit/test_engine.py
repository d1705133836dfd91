"""The call engine, outcome by outcome, in-process: the order of checks, what each outcome
records, and what it signs (docs/errors.md, docs/security.md).

Real parts: a PKI from `jisr pki`, the shipped policy, the trust store, the receipt key,
an SQLite audit store behind the group-commit writer. The pipeline is not the engine's:
each method here answers from a stand-in `run` that returns a fixed PersonStatus (the
pipeline has its own tests), which also lets a test make it fail on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.type.date_pb2 import Date

from adapters.base import FetchContext
from gateway.audit.record import AuditRecord
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import AuditStore, open_audit_store
from gateway.audit.writer import AuditWriter
from gateway.base.errors import ExchangeError, Reason, not_found
from gateway.base.identifiers import make_idcs
from gateway.base.jws import body_hash
from gateway.engine.call import (
    Answered,
    Engine,
    Invocation,
    Outcome,
    RefusalPlan,
    Refused,
    Security,
    StreamMethod,
    UnaryMethod,
    refusal_plan,
)
from gateway.engine.steps import drive
from gateway.pb.jisr.v1 import records_pb2
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import validation
from gateway.sdk.client import Credentials
from gateway.security import pki, policy, receipts, trust
from gateway.security.receipts import ReceiptSigner
from gateway.security.tokens import ReplayGuard, RequestClaims
from tests.support.identities import make_pki

PERSON = f"/{pb.DESCRIPTOR.services_by_name['RegistryExchange'].full_name}/GetPersonStatus"
IDCS = make_idcs("100000001")
REQUEST = pb.GetPersonStatusRequest(purpose="AMO_ENROLMENT", idcs=IDCS).SerializeToString()
STATUS = pb.PersonStatus(
    idcs=IDCS,
    vital_status=records_pb2.VITAL_STATUS_DECEASED,
    death_date=Date(year=2026, month=1, day=2),
    household_id="H000000001",
    birth_date=Date(year=1950, month=3, day=4),
)


def _answer(request: pb.GetPersonStatusRequest, ctx: FetchContext) -> pb.GetPersonStatusResponse:
    return pb.GetPersonStatusResponse(person=STATUS)


def _person(
    run: Callable[..., Any] = _answer,
) -> UnaryMethod[pb.GetPersonStatusRequest, pb.GetPersonStatusRequest]:
    return UnaryMethod(
        pb.GetPersonStatusRequest, run, "person", lambda r: ("idcs", validation.idcs(r.idcs))
    )


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class World:
    engine: Engine
    store: AuditStore
    writer: AuditWriter
    pki_dir: Path

    def creds(self, institution: str) -> Credentials:
        return Credentials.from_pki(self.pki_dir, institution)

    def call(
        self,
        body: bytes = REQUEST,
        *,
        institution: str = "CNSS",
        purpose: str = "AMO_ENROLMENT",
        tokens: tuple[str, ...] | None = None,
        certificate: str | None = None,
        method: UnaryMethod[Any, Any] | None = None,
        active: bool = True,
    ) -> Outcome:
        if tokens is None:
            tokens = (self.creds(institution).signer.request_token(PERSON, purpose, body),)
        inv = Invocation(
            PERSON,
            institution if certificate is None else certificate,
            tokens,
            remaining=lambda: 10.0 if active else 0.0,
            active=lambda: active,
        )
        return drive(self.engine.unary(inv, body, method or _person()))

    def records(self) -> list[AuditRecord]:
        return list(self.store.records())

    def receipt(self, token: str) -> dict[str, Any]:
        return receipts.verify(token, pki.gateway_jwks(self.pki_dir))


@pytest.fixture
def world(pki_dir: Path, tmp_path: Path) -> Iterator[World]:
    key, kid = pki.load_gateway_signing_key(pki_dir)
    store = open_audit_store(None, tmp_path)
    writer = AuditWriter(store, "node-1", lambda checkpoint: checkpoint)
    security = Security(
        trust=trust.load_dir(pki.PkiPaths(pki_dir).trust_dir),
        policy=policy.load_default(),
        receipts=ReceiptSigner(key, kid, pki.gateway_id(pki_dir)),
        audience=pki.gateway_id(pki_dir),
        audit=AuditRecorder(writer, b"k" * 32),
        replay=ReplayGuard(),
    )
    yield World(Engine(security), store, writer, pki_dir)
    writer.close()
    store.close()


def _refused(outcome: Outcome) -> Refused:
    assert isinstance(outcome, Refused), outcome
    return outcome


# -- answered -------------------------------------------------------------------------------


def test_an_allowed_call_is_answered_with_the_granted_fields_only(world: World) -> None:
    outcome = world.call()
    assert isinstance(outcome, Answered)
    response = pb.GetPersonStatusResponse.FromString(outcome.body)
    assert response.person == pb.PersonStatus(
        vital_status=records_pb2.VITAL_STATUS_DECEASED, death_date=Date(year=2026, month=1, day=2)
    )
    assert set(response.withheld.paths) >= {"idcs", "household_id", "birth_date"}


def test_an_answer_is_recorded_before_it_is_signed_and_the_receipt_names_the_record(
    world: World,
) -> None:
    outcome = world.call()
    assert isinstance(outcome, Answered)
    (record,) = world.records()
    claims = world.receipt(outcome.receipt)
    assert (record.decision, record.requester, record.purpose) == (
        "permit",
        "CNSS",
        "AMO_ENROLMENT",
    )
    assert claims["decision"] == "permit"
    assert claims["audit"] == record.record_id
    assert claims["fields"] == ["vital_status", "death_date"]
    assert len(record.subjects) == 1
    assert IDCS not in record.subjects[0]


# -- refused before the token is known -------------------------------------------------------


def test_a_call_without_a_token_is_refused_recorded_and_not_receipted(world: World) -> None:
    refused = _refused(world.call(tokens=()))
    assert (refused.error.reason, refused.receipt) == (Reason.MISSING_SIGNATURE, None)
    (record,) = world.records()
    assert (record.decision, record.reason, record.requester) == (
        "deny",
        "MISSING_SIGNATURE",
        "CNSS",
    )


def test_two_tokens_are_refused_as_a_missing_signature(world: World) -> None:
    token = world.creds("CNSS").signer.request_token(PERSON, "AMO_ENROLMENT", REQUEST)
    refused = _refused(world.call(tokens=(token, token)))
    assert refused.error.reason == Reason.MISSING_SIGNATURE


def test_a_call_without_a_certificate_is_refused_and_not_recorded(world: World) -> None:
    refused = _refused(world.call(certificate=""))
    assert (refused.error.reason, refused.receipt) == (Reason.NO_CLIENT_CERTIFICATE, None)
    assert world.records() == []


def test_a_token_over_other_bytes_is_refused_before_anything_is_read(world: World) -> None:
    token = world.creds("CNSS").signer.request_token(PERSON, "AMO_ENROLMENT", b"other")
    refused = _refused(world.call(tokens=(token,)))
    assert (refused.error.reason, refused.receipt) == (Reason.BODY_MISMATCH, None)
    (record,) = world.records()
    assert record.reason == "BODY_MISMATCH"


def test_a_token_signed_by_another_institution_than_the_certificates_is_unknown(
    world: World,
) -> None:
    """The key is looked up among the certificate's institution's keys only."""
    token = world.creds("ANSS").signer.request_token(PERSON, "AMO_ENROLMENT", REQUEST)
    refused = _refused(world.call(tokens=(token,), certificate="CNSS"))
    assert (refused.error.reason, refused.receipt) == (Reason.UNKNOWN_KEY, None)


# -- refused once the token is known: a deny receipt --------------------------------------


def test_a_replayed_token_is_refused_with_a_deny_receipt_and_recorded(world: World) -> None:
    token = world.creds("CNSS").signer.request_token(PERSON, "AMO_ENROLMENT", REQUEST)
    assert isinstance(world.call(tokens=(token,)), Answered)
    refused = _refused(world.call(tokens=(token,)))
    assert refused.error.reason == Reason.REPLAYED
    assert refused.receipt is not None
    claims = world.receipt(refused.receipt)
    assert (claims["decision"], claims["reason"]) == ("deny", "REPLAYED")
    assert [r.reason for r in world.records()] == ["", "REPLAYED"]


def test_bytes_that_are_no_request_are_refused_after_authentication(world: World) -> None:
    refused = _refused(world.call(b"\xff\xff"))
    assert refused.error.reason == Reason.MALFORMED_REQUEST
    assert refused.receipt is not None


def test_a_request_purpose_other_than_the_tokens_is_refused(world: World) -> None:
    body = pb.GetPersonStatusRequest(purpose="ASD_ELIGIBILITY", idcs=IDCS).SerializeToString()
    token = world.creds("CNSS").signer.request_token(PERSON, "AMO_ENROLMENT", body)
    refused = _refused(world.call(body, tokens=(token,)))
    assert (refused.error.reason, refused.error.metadata) == (
        Reason.PURPOSE_MISMATCH,
        {"field": "purpose"},
    )


def test_a_purpose_the_policy_does_not_grant_is_refused_before_the_run(world: World) -> None:
    body = pb.GetPersonStatusRequest(purpose="ASD_ELIGIBILITY", idcs=IDCS).SerializeToString()
    ran: list[bool] = []
    method = _person(lambda r, ctx: ran.append(True))
    refused = _refused(world.call(body, purpose="ASD_ELIGIBILITY", method=method))
    assert refused.error.reason == Reason.PURPOSE_NOT_ALLOWED
    assert ran == []
    assert world.receipt(refused.receipt or "")["reason"] == "PURPOSE_NOT_ALLOWED"


def test_a_consent_based_grant_without_a_consent_registry_is_consent_missing(
    world: World,
) -> None:
    path = PERSON.replace("GetPersonStatus", "VerifyEligibility")
    body = pb.VerifyEligibilityRequest(
        purpose="SCHOOL_SUPPORT", subject=pb.Subject(household_id="H000000001"), programme="ASD"
    ).SerializeToString()
    token = world.creds("MEN").signer.request_token(path, "SCHOOL_SUPPORT", body)
    inv = Invocation(path, "MEN", (token,))
    method: UnaryMethod[pb.VerifyEligibilityRequest, pb.VerifyEligibilityRequest] = UnaryMethod(
        pb.VerifyEligibilityRequest,
        lambda r, ctx: pb.VerifyEligibilityResponse(),
        "decision",
        lambda r: validation.subject(r.subject),
    )
    refused = _refused(drive(world.engine.unary(inv, body, method)))
    assert refused.error.reason == Reason.CONSENT_MISSING


def test_a_refusal_of_the_pipeline_keeps_its_reason_and_is_receipted(world: World) -> None:
    def missing(request: pb.GetPersonStatusRequest, ctx: FetchContext) -> None:
        raise not_found("no such person")

    refused = _refused(world.call(method=_person(missing)))
    assert refused.error.reason == Reason.SUBJECT_NOT_FOUND
    (record,) = world.records()
    assert (record.decision, record.reason) == ("deny", "SUBJECT_NOT_FOUND")
    assert world.receipt(refused.receipt or "")["audit"] == record.record_id


def test_a_fault_is_internal_and_its_message_is_not_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: pb.GetPersonStatusRequest, ctx: FetchContext) -> None:
        raise RuntimeError(f"secret {IDCS}")

    with caplog.at_level(logging.ERROR, logger="jisr"):
        refused = _refused(world.call(method=_person(broken)))
    assert (refused.error.reason, refused.error.message) == (Reason.INTERNAL, "gateway fault")
    assert "RuntimeError" in caplog.text
    assert IDCS not in caplog.text


def test_a_fault_after_the_caller_left_is_the_callers_doing(world: World) -> None:
    def broken(request: pb.GetPersonStatusRequest, ctx: FetchContext) -> None:
        raise RuntimeError("write failed")

    refused = _refused(world.call(method=_person(broken), active=False))
    assert refused.error.reason == Reason.CALLER_DEADLINE_EXCEEDED
    assert [r.reason for r in world.records()] == ["CALLER_DEADLINE_EXCEEDED"]


def test_an_answer_that_cannot_be_recorded_is_not_given(world: World) -> None:
    world.writer.close()
    refused = _refused(world.call())
    assert (refused.error.reason, refused.receipt) == (Reason.AUDIT_UNAVAILABLE, None)


def _verified(
    institution: str = "CNSS", method: str = PERSON, jti: str = "dci-" + "a" * 43
) -> RequestClaims:
    return RequestClaims(
        institution, "cnss-dci", jti, "AMO_ENROLMENT", method, body_hash(b"{}"), 0, 2**40, "k"
    )


def _edge_call(world: World, claims: Any, certificate: str = "CNSS") -> Outcome:
    inv = Invocation(PERSON, certificate, (), verified=claims)
    return drive(world.engine.unary(inv, REQUEST, _person()))


def test_claims_an_edge_verified_are_answered_and_recorded_with_their_request_hash(
    world: World,
) -> None:
    outcome = _edge_call(world, _verified())
    assert isinstance(outcome, Answered)
    (record,) = world.records()
    assert (record.requester, record.requester_sub, record.decision) == (
        "CNSS",
        "cnss-dci",
        "permit",
    )
    assert record.rh == _verified().rh
    assert world.receipt(outcome.receipt)["rh"] == _verified().rh


def test_edge_claims_of_another_institution_than_the_transports_are_refused(
    world: World,
) -> None:
    outcome = _edge_call(world, _verified("ANSS"))
    assert isinstance(outcome, Refused)
    assert outcome.error.reason == Reason.ISSUER_MISMATCH


def test_edge_claims_for_another_method_are_refused(world: World) -> None:
    outcome = _edge_call(world, _verified(method="/jisr.v1.RegistryExchange/Other"))
    assert isinstance(outcome, Refused)
    assert outcome.error.reason == Reason.METHOD_MISMATCH


def test_edge_claims_used_twice_are_a_replay(world: World) -> None:
    assert isinstance(_edge_call(world, _verified()), Answered)
    again = _edge_call(world, _verified())
    assert isinstance(again, Refused)
    assert again.error.reason == Reason.REPLAYED


def test_a_refusal_at_the_door_is_recorded_without_a_receipt(world: World) -> None:
    error = ExchangeError(Reason.REQUEST_TIMEOUT, "the request did not arrive in time")
    world.engine.refused_at_door(PERSON, "CNSS", error)
    (record,) = world.records()
    assert (record.requester, record.reason, record.jti) == ("CNSS", "REQUEST_TIMEOUT", "")


# -- server streams ---------------------------------------------------------------------------


def _stream(count: int) -> StreamMethod[pb.GetPersonStatusRequest]:
    def run(request: pb.GetPersonStatusRequest, ctx: FetchContext) -> Iterator[pb.PersonStatus]:
        yield from (STATUS for _ in range(count))

    return StreamMethod(pb.GetPersonStatusRequest, run)


def _run_stream(world: World, count: int, take: int | None = None) -> list[bytes]:
    """Read the stream (`take` messages, then leave; or to its end, whose outcome must be
    a permit with its receipt)."""
    token = world.creds("CNSS").signer.request_token(PERSON, "AMO_ENROLMENT", REQUEST)
    inv = Invocation(PERSON, "CNSS", (token,))
    stream = world.engine.server_stream(inv, REQUEST, _stream(count))
    bodies: list[bytes] = []
    outcome: Outcome | None = None
    while outcome is None and (take is None or len(bodies) < take):
        try:
            bodies.append(next(stream))
        except StopIteration as end:
            outcome = end.value
    if outcome is None:
        stream.close()
    else:
        assert isinstance(outcome, Answered)
        assert world.receipt(outcome.receipt)["decision"] == "permit"
    return bodies


def test_a_stream_is_recorded_once_and_each_message_keeps_the_granted_fields(
    world: World,
) -> None:
    bodies = _run_stream(world, 3)
    assert [pb.PersonStatus.FromString(b).HasField("birth_date") for b in bodies] == [False] * 3
    assert [r.decision for r in world.records()] == ["permit"]


def test_a_stream_its_caller_leaves_is_recorded_as_the_callers_end(world: World) -> None:
    _run_stream(world, 3, take=1)
    assert [r.reason for r in world.records()] == ["", "CALLER_CANCELLED"]


# -- the fail-closed rules, as a pure function -------------------------------------------------


@pytest.mark.parametrize(
    ("requester_known", "token_verified", "audited", "reason", "plan"),
    [
        (False, False, False, Reason.NO_CLIENT_CERTIFICATE, RefusalPlan(False, False, False)),
        (True, False, False, Reason.MISSING_SIGNATURE, RefusalPlan(True, False, False)),
        (True, False, False, Reason.BAD_SIGNATURE, RefusalPlan(True, False, False)),
        (True, True, False, Reason.PURPOSE_NOT_ALLOWED, RefusalPlan(True, True, True)),
        (True, True, False, Reason.REPLAYED, RefusalPlan(True, False, True)),
        (True, True, True, Reason.BACKEND_TIMEOUT, RefusalPlan(True, False, True)),
        (True, True, False, Reason.AUDIT_UNAVAILABLE, RefusalPlan(False, True, False)),
        (True, False, False, Reason.AUDIT_UNAVAILABLE, RefusalPlan(False, False, False)),
    ],
    ids=[
        "no-certificate",
        "no-token",
        "forged-token",
        "policy",
        "replay",
        "after-the-record",
        "audit-down",
        "audit-down-unverified",
    ],
)
def test_what_a_refusal_records_and_signs(
    requester_known: bool, token_verified: bool, audited: bool, reason: Reason, plan: RefusalPlan
) -> None:
    assert (
        refusal_plan(
            requester_known=requester_known,
            token_verified=token_verified,
            audited=audited,
            reason=reason,
        )
        == plan
    )
