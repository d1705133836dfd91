"""A consent artefact's content rules: every claim of the wrong shape is refused with
CONSENT_ARTEFACT_INVALID and a message naming the claim, before anything is recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from consent import artefact
from consent.artefact import ArtefactError
from gateway.base.errors import Reason
from gateway.sdk.client import Credentials
from gateway.security import pki, trust


@pytest.fixture(scope="module")
def anss(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, trust.TrustStore]:
    root = tmp_path_factory.mktemp("pki")
    pki.init(root)
    pki.issue(root, "ANSS")
    return Credentials.from_pki(root, "ANSS"), trust.load_dir(pki.PkiPaths(root).trust_dir)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "ANSS",
        "act": "grant",
        "jti": "j-1",
        "sub_kind": "household",
        "sub": "H00000001",
        "grantor": "123456789012",
        "grantee": "MEN",
        "purposes": ["SCHOOL_SUPPORT"],
        "scopes": ["composition"],
        "nbf": now,
        "exp": now + 3600,
        "method": "counter",
    }
    for name, value in changes.items():
        if value is None:
            base.pop(name)
        else:
            base[name] = value
    return base


def verify(anss: tuple[Credentials, trust.TrustStore], body: dict[str, Any]) -> artefact.Artefact:
    creds, store = anss
    signer = creds.signer
    token = artefact.sign(body, signer.key, signer.kid, signer.alg)
    return artefact.verify(token, caller="ANSS", collectors=("ANSS",), trust=store)


def refused(anss: tuple[Credentials, trust.TrustStore], body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ArtefactError) as err:
        verify(anss, body)
    return err.value.reason, err.value.message


INVALID = Reason.CONSENT_ARTEFACT_INVALID


def test_a_well_formed_grant_is_read_back(anss: tuple[Credentials, trust.TrustStore]) -> None:
    got = verify(anss, claims(purposes=["B", "A", "B"], use_cap={"max_uses": 3, "period_s": 60}))
    assert (got.action, got.collected_by, got.subject) == ("grant", "ANSS", "H00000001")
    assert got.purposes == ("A", "B")
    assert got.use_cap is not None
    assert (got.use_cap.max_uses, got.use_cap.period_s) == (3, 60)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iss": "MEN"}, "the artefact's iss is not the calling institution"),
        ({"act": "amend"}, "act must be grant or revoke"),
        ({"act": None}, "act must be a string"),
        ({"sub_kind": "company"}, "sub_kind must be household or person"),
        ({"nbf": "today"}, "nbf must be a whole number"),
        ({"exp": True}, "exp must be a whole number"),
        ({"nbf": -1}, "nbf and exp must be valid times"),
        ({"exp": 10**12}, "nbf and exp must be valid times"),
        ({"exp": 1_000, "nbf": 1_000}, "a consent must end after it starts"),
        ({"jti": ""}, "jti must be a string"),
        ({"grantee": 7}, "grantee must be a string"),
        ({"purposes": []}, "purposes must be a list of codes"),
        ({"scopes": "composition"}, "scopes must be a list of codes"),
        ({"scopes": ["composition", 3]}, "scopes must be a list of codes"),
        ({"use_cap": [3, 60]}, "use_cap must be an object"),
        ({"use_cap": {"max_uses": 0, "period_s": 60}}, "use_cap needs positive max_uses"),
    ],
)
def test_a_grant_with_a_bad_claim_is_invalid_naming_it(
    anss: tuple[Credentials, trust.TrustStore], changes: dict[str, Any], message: str
) -> None:
    reason, said = refused(anss, claims(**changes))
    assert reason == INVALID
    assert said.startswith(message)


def test_a_revocation_needs_the_consent_it_revokes(
    anss: tuple[Credentials, trust.TrustStore],
) -> None:
    body = {"iss": "ANSS", "act": "revoke", "jti": "r-1", "grantor": "1", "method": "counter"}
    assert refused(anss, body) == (INVALID, "cid must be a string")
    assert verify(anss, body | {"cid": "C1"}).consent_id == "C1"
