"""Consent on every exchange whose basis is consent, on SQLite and on PostgreSQL.

ANSS (a consent collector) records consents at its counters; MEN asks for a household's
composition for SCHOOL_SUPPORT, which the policy grants only under the family's consent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1.registry_pb2 import Subject
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import databases, processes, registry_rows

SCHOOL = "SCHOOL_SUPPORT"
MANAGE = "CONSENT_MANAGEMENT"
FULL = ["composition", "situation"]


@dataclass
class Deployment:
    """Gateway processes sharing one consent database."""

    targets: list[str]
    pki_dir: Path

    def client(self, institution: str, index: int = 0) -> JisrClient:
        creds = Credentials.from_pki(self.pki_dir, institution)
        return JisrClient(self.targets[index], creds, timeout=30)


def _policy_with_a_non_collector_grant(folder: Path) -> Path:
    """The shipped policy, plus a GrantConsent grant for CNSS, which is no collector."""
    shipped = (resources.files("gateway") / "data" / "policy.toml").read_text(encoding="utf-8")
    path = folder / "policy.toml"
    path.write_text(
        shipped
        + '\n[[grant]]\ninstitution = "CNSS"\nmethod = "GrantConsent"\n'
        + f'purposes = ["{MANAGE}"]\nbasis = "illustrative"\nfields = ["consent"]\n'
    )
    return path


def _start(
    count: int,
    registry_dir: Path,
    pki_dir: Path,
    folder: Path,
    url: str | None,
) -> list[processes.Proc]:
    policy = _policy_with_a_non_collector_grant(folder)
    env = {"JISR_POLICY": str(policy), "JISR_STATE_DIR": str(folder / "state")}
    if url is not None:
        env["JISR_DATABASE_URL"] = url
    (folder / "state").mkdir(exist_ok=True)
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    args += ["--pki-dir", str(pki_dir)]
    return [processes.start(args, folder / f"gateway-{i}.log", env=env) for i in range(count)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp(f"consent-{request.param}")
    if request.param == "sqlite":
        # Two processes on one SQLite file (WAL) as well: replicas on one host.
        procs = _start(2, registry_dir, pki_dir, folder, None)
        yield Deployment([p.target for p in procs], pki_dir)
        for proc in procs:
            proc.stop()
        return
    with databases.postgres_schema() as url:
        procs = _start(2, registry_dir, pki_dir, folder, url)
        yield Deployment([p.target for p in procs], pki_dir)
        for proc in procs:
            proc.stop()


def _households(registry_dir: Path, offset: int, count: int) -> list[tuple[str, str]]:
    """(household id, declarant IDCS) pairs no other test uses."""
    with registry_rows.connect(registry_dir) as db:
        rows = db.execute(
            "SELECT household_id, idcs FROM membership WHERE relationship = 1"
            " ORDER BY household_id LIMIT ? OFFSET ?",
            (count, offset),
        ).fetchall()
    return [(str(h), str(i)) for h, i in rows]


_next = iter(range(0, 10_000, 7))


def household(registry_dir: Path) -> tuple[str, str]:
    return _households(registry_dir, next(_next), 1)[0]


def grant(
    collector: JisrClient,
    hid: str,
    grantor: str,
    scopes: list[str],
    **extra: Any,
) -> cpb.Consent:
    now = int(time.time())
    claims: dict[str, Any] = {
        "act": "grant",
        "jti": secrets.token_urlsafe(12),
        "sub_kind": "household",
        "sub": hid,
        "grantor": grantor,
        "grantee": "MEN",
        "purposes": [SCHOOL],
        "scopes": scopes,
        "nbf": now - 10,
        "exp": now + 3600,
        "method": "counter",
    }
    claims.update(extra)
    request = cpb.GrantConsentRequest(purpose=MANAGE, artefact=collector.sign_artefact(claims))
    return collector.consent(
        "GrantConsent", request, cpb.GrantConsentResponse, MANAGE
    ).message.consent


def revoke(collector: JisrClient, consent_id: str, grantor: str) -> cpb.Consent:
    claims = {"act": "revoke", "jti": secrets.token_urlsafe(12), "cid": consent_id}
    claims |= {"grantor": grantor, "method": "counter"}
    request = cpb.RevokeConsentRequest(purpose=MANAGE, artefact=collector.sign_artefact(claims))
    return collector.consent(
        "RevokeConsent", request, cpb.RevokeConsentResponse, MANAGE
    ).message.consent


def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(JisrError) as err:
        call()
    return err.value.code, err.value.reason


DENIED = grpc.StatusCode.FAILED_PRECONDITION


def test_granted_consent_permits_the_exchange_and_is_its_basis(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        consent = grant(anss, hid, declarant, FULL)
        answer = men.household_status(SCHOOL, hid)
    assert answer.message.household.members
    assert answer.receipt["basis"] == consent.consent_id
    assert not {"region", "area", "members.relationship", "members.birth_date"} & set(
        answer.withheld
    )
    assert "members.idcs" in answer.withheld  # not in MEN's grant, consent or not


def test_without_consent_the_exchange_is_refused_and_discloses_nothing(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, _ = household(registry_dir)
    with deployment.client("MEN") as men, pytest.raises(JisrError) as err:
        men.household_status(SCHOOL, hid)
    assert (err.value.code, err.value.reason) == (DENIED, "CONSENT_MISSING")
    assert err.value.receipt is not None
    assert err.value.receipt["fields"] == []


def test_revocation_applies_to_the_next_call(deployment: Deployment, registry_dir: Path) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        consent = grant(anss, hid, declarant, FULL)
        men.household_status(SCHOOL, hid)
        revoke(anss, consent.consent_id, declarant)
        assert refusal(lambda: men.household_status(SCHOOL, hid)) == (DENIED, "CONSENT_REVOKED")


def test_expired_consent_is_refused(deployment: Deployment, registry_dir: Path) -> None:
    hid, declarant = household(registry_dir)
    now = int(time.time())
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        grant(anss, hid, declarant, FULL, nbf=now - 7200, exp=now - 60)
        assert refusal(lambda: men.household_status(SCHOOL, hid)) == (DENIED, "CONSENT_EXPIRED")


def test_narrower_consent_discloses_its_scopes_only_where_the_policy_allows_partial(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        grant(anss, hid, declarant, ["composition"])
        partial = men.household_status(SCHOOL, hid)
        # VerifyEligibility's grant is not partial: its "eligibility" scope is not covered.
        whole = refusal(lambda: men.verify(SCHOOL, hid, "ASD"))
    assert partial.message.household.members[0].relationship
    assert {"area", "region"} <= set(partial.withheld)
    assert "members.relationship" not in partial.withheld
    assert whole == (DENIED, "CONSENT_SCOPE")


def test_use_cap_is_enforced(deployment: Deployment, registry_dir: Path) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        grant(anss, hid, declarant, FULL, use_cap={"max_uses": 2, "period_s": 86_400})
        men.household_status(SCHOOL, hid)
        men.household_status(SCHOOL, hid)
        assert refusal(lambda: men.household_status(SCHOOL, hid)) == (
            DENIED,
            "CONSENT_USE_EXCEEDED",
        )


def test_statute_based_exchange_needs_no_consent(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, _ = household(registry_dir)
    with deployment.client("ANSS") as anss:
        answer = anss.household_status("ASD_ELIGIBILITY", hid)
    assert answer.message.household.members
    assert answer.receipt["basis"].startswith("Décret 2.23.1068")


def test_a_batch_mixes_permitted_and_refused_items(
    deployment: Deployment, registry_dir: Path
) -> None:
    pairs = _households(registry_dir, 9_000, 6)
    with deployment.client("ANSS") as anss, deployment.client("MEN") as men:
        for hid, declarant in pairs[::2]:
            grant(anss, hid, declarant, ["eligibility"])
        (results,) = men.verify_batches(SCHOOL, "ASD", [[hid for hid, _ in pairs]])
    outcomes = [r.WhichOneof("result") for r in results.results]
    assert outcomes == ["decision", "error"] * 3
    assert all(r.error.code == DENIED.value[0] for r in results.results[1::2])


def test_artefact_with_a_bad_signature_is_refused(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss, deployment.client("MS") as ms:
        now = int(time.time())
        forged = ms.sign_artefact(
            {
                "act": "grant",
                "jti": "x",
                "sub_kind": "household",
                "sub": hid,
                "grantor": declarant,
                "grantee": "MEN",
                "purposes": [SCHOOL],
                "scopes": FULL,
                "nbf": now,
                "exp": now + 60,
                "method": "counter",
            }
        )
        forged = forged.replace('"MS"', '"ANSS"')
        request = cpb.GrantConsentRequest(purpose=MANAGE, artefact=forged)
        code, reason = refusal(
            lambda: anss.consent("GrantConsent", request, cpb.GrantConsentResponse, MANAGE)
        )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_ARTEFACT_INVALID")


def test_artefact_from_a_non_collector_is_refused(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("CNSS") as cnss:
        code, reason = refusal(lambda: grant(cnss, hid, declarant, FULL))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_CONSENT_COLLECTOR")


def test_only_the_declarant_may_consent_for_a_household(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, _ = household(registry_dir)
    other = registry_rows.one(
        registry_dir, f"SELECT idcs FROM membership WHERE household_id <> '{hid}' LIMIT 1"
    )
    with deployment.client("ANSS") as anss:
        code, reason = refusal(lambda: grant(anss, hid, other, FULL))
    assert (code, reason) == (DENIED, "GRANTOR_NOT_ENTITLED")


def test_revision_history_verifies(deployment: Deployment, registry_dir: Path) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss:
        consent = grant(anss, hid, declarant, FULL)
        revoke(anss, consent.consent_id, declarant)
        request = cpb.GetConsentRequest(
            purpose=MANAGE, consent_id=consent.consent_id, include_history=True
        )
        shown = anss.consent("GetConsent", request, cpb.GetConsentResponse, MANAGE).message
    assert [c.revision for c in shown.history] == [1, 2]
    assert shown.history[1].prev_hash == shown.history[0].hash
    assert shown.history_verified
    assert shown.consent.status == cpb.CONSENT_STATUS_REVOKED


def test_revocation_through_one_gateway_denies_through_another_within_a_second(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with (
        deployment.client("ANSS", 0) as anss_a,
        deployment.client("MEN", 1) as men_b,
    ):
        consent = grant(anss_a, hid, declarant, FULL)
        men_b.household_status(SCHOOL, hid)
        revoke(anss_a, consent.consent_id, declarant)
        deadline = time.monotonic() + 1.0
        reason = ""
        while not reason and time.monotonic() < deadline:
            reason = _refusal_reason(men_b, hid)
            time.sleep(0.0 if reason else 0.05)
    assert reason == "CONSENT_REVOKED", "still permitted 1 s after the revocation"


def _refusal_reason(client: JisrClient, hid: str) -> str:
    try:
        client.household_status(SCHOOL, hid)
    except JisrError as err:
        return err.reason
    return ""


def test_a_use_cap_beyond_the_wire_range_is_refused_before_anything_is_stored(
    deployment: Deployment, registry_dir: Path
) -> None:
    hid, declarant = household(registry_dir)
    with deployment.client("ANSS") as anss:
        code, reason = refusal(
            lambda: grant(anss, hid, declarant, FULL, use_cap={"max_uses": 2**40, "period_s": 60})
        )
        listed = anss.consent(
            "ListConsents", _list_request(hid), cpb.ListConsentsResponse, MANAGE
        ).message
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_ARTEFACT_INVALID")
    assert list(listed.consents) == []


def test_a_bad_page_token_is_invalid_argument(deployment: Deployment, registry_dir: Path) -> None:
    hid, _ = household(registry_dir)
    request = _list_request(hid)
    request.page_token = "not-a-token"
    with deployment.client("ANSS") as anss:
        code, reason = refusal(
            lambda: anss.consent("ListConsents", request, cpb.ListConsentsResponse, MANAGE)
        )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE")


def _list_request(hid: str) -> cpb.ListConsentsRequest:
    return cpb.ListConsentsRequest(purpose=MANAGE, subject=Subject(household_id=hid))
