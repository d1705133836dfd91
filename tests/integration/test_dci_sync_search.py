"""The DCI facade (`jisr dci serve`, docs/dci.md) from outside: a partner takes a token
with its client credentials, signs its envelope with its own key, and searches; the answer
is the standard's signed envelope, holds only what its grant discloses, and leaves the
same audit record as the gRPC call it stands for. Bad input gets the standard's errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.store import open_audit_store
from gateway.dci import schemas, signature
from gateway.sdk.client import Credentials, JisrClient
from gateway.security.trust import key_from_jwk
from tests.support import processes, registry_rows
from tests.support.dci import PURPOSE, envelope, item, signed

pytestmark = pytest.mark.integration


@dataclass
class Site:
    proc: processes.Proc
    pki_dir: Path
    state: Path
    secret: str
    households: list[str]

    @property
    def url(self) -> str:
        return f"http://{self.proc.target}"

    def token(self, client_id: str = "anss-dci", secret: str | None = None) -> str:
        reply = httpx.post(
            f"{self.url}/oauth2/client/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": self.secret if secret is None else secret,
            },
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


def _jisr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("dci")
    clients = folder / "clients.json"
    added = _jisr(
        "dci", "client", "add", "anss-dci", "--institution", "ANSS", "--clients", str(clients)
    )
    assert added.returncode == 0, added.stderr
    # The state of the session's gateway (its data dir): the two processes share the audit
    # store, each with its own chain, as the gateway and the facade do after `make run`.
    env = {"JISR_AUDIT_CHECKPOINT_SECONDS": "0.2"}
    proc = processes.start(
        [
            "dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir),
            "--pki-dir", str(pki_dir), "--clients", str(clients),
        ],
        folder / "dci.log",
        env=env,
    )  # fmt: skip
    hids = [h.household_id for h in registry_rows.households(registry_dir, 6)]
    try:
        yield Site(proc, pki_dir, registry_dir, added.stdout.strip(), hids)
    finally:
        proc.stop()


def search(site: Site, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{site.url}/registry/sync/search",
        content=json.dumps(body),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or site.token()}",
        },
        timeout=60,
    )


def test_a_signed_search_for_a_household_answers_its_granted_fields(site: Site) -> None:
    reply = search(site, signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])])))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert schemas.load().response("sync-search", body) == []
    (answer,) = body["message"]["search_response"]
    assert answer["status"] == "succ", answer
    (record,) = answer["data"]["reg_records"]
    assert record["@type"] == "Group"
    assert record["member_list"]
    assert "region" in record["place"]
    assert "poverty_score_band" not in record  # ANSS's grant discloses no score band
    assert "group_identifier" not in record  # nor the household id: asked, not disclosed
    assert all("member_identifier" not in m for m in record["member_list"])  # nor any IDCS


def test_the_answer_is_signed_by_the_gateway(site: Site) -> None:
    reply = search(site, signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[1])])))
    body = reply.json()
    jwks = httpx.get(f"{site.url}/.well-known/jwks.json", timeout=30).json()
    assert schemas.load().jwks(jwks) == []
    keys = {k["kid"]: key_from_jwk(k)[0] for k in jwks["keys"]}
    verified = signature.verify_with(
        body["signature"], body["header"], body["message"],
        sender_id=body["header"]["sender_id"], keys=keys, now=time.time(),
    )  # fmt: skip
    assert verified.kid in keys


def test_a_search_without_a_token_is_refused_with_the_standard_envelope(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])]))
    reply = httpx.post(
        f"{site.url}/registry/sync/search", content=json.dumps(body),
        headers={"Content-Type": "application/json"}, timeout=30,
    )  # fmt: skip
    assert reply.status_code == 401
    assert reply.json()["message"]["error"]["code"] == "err.request.unauthorized"
    assert schemas.load().response("ack", reply.json()) == []


def test_a_wrong_client_secret_gets_no_token(site: Site) -> None:
    reply = httpx.post(
        f"{site.url}/oauth2/client/token",
        data={"grant_type": "client_credentials", "client_id": "anss-dci", "client_secret": "x"},
        timeout=30,
    )
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


def test_an_unsigned_envelope_is_refused(site: Site) -> None:
    body = {"signature": "unsigned-stub", **envelope([item("HOUSEHOLD_ID", site.households[0])])}
    reply = search(site, body)
    assert reply.status_code == 401
    assert reply.json()["message"]["error"]["code"] == "err.signature.invalid"


def test_an_envelope_changed_after_signing_is_refused(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])]))
    body["message"]["search_request"][0]["search_criteria"]["query"]["value"] = site.households[2]
    reply = search(site, body)
    assert reply.status_code == 401
    assert reply.json()["message"]["error"]["code"] == "err.signature.invalid"


def test_a_replayed_message_id_is_rejected_and_discloses_nothing(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[3])]))
    first = search(site, body)
    assert first.json()["header"]["status"] == "succ"
    again = search(site, body)
    assert again.status_code == 200
    header = again.json()["header"]
    assert (header["status"], header["status_reason_code"]) == ("rjct", "rjct.message_id.duplicate")
    assert again.json()["message"]["search_response"] == []


def test_a_schema_violation_is_refused_naming_where(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])]))
    del body["message"]
    reply = search(site, body)
    assert reply.status_code == 400
    error = reply.json()["message"]["error"]
    assert error["code"] == "err.request.bad"
    assert "message" in error["message"]


def test_malformed_json_is_refused(site: Site) -> None:
    reply = httpx.post(
        f"{site.url}/registry/sync/search", content=b"{not json",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {site.token()}"},
        timeout=30,
    )  # fmt: skip
    assert reply.status_code == 400
    assert reply.json()["message"]["error"]["code"] == "err.request.bad"


def test_a_search_without_a_purpose_is_rejected_item_by_item(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0], None)]))
    (answer,) = search(site, body).json()["message"]["search_response"]
    assert answer["status"] == "rjct"
    assert answer["status_reason_code"] == "rjct.search_criteria.invalid"
    assert "MISSING_PURPOSE" in answer["status_reason_message"]


def test_a_population_query_is_rejected(site: Site) -> None:
    population = item("HOUSEHOLD_ID", "x")
    population["search_criteria"]["query_type"] = "expression"
    population["search_criteria"]["query"] = {"type": "ns:org:QueryType:expression", "value": {}}
    (answer,) = search(site, signed(site.pki_dir, envelope([population]))).json()["message"][
        "search_response"
    ]
    assert (answer["status"], answer["status_reason_code"]) == (
        "rjct",
        "rjct.search_criteria.invalid",
    )


def _record(state: Path, audit: str) -> AuditRecord:
    node, seq = audit.rsplit(":", 1)
    store = open_audit_store(None, state, read_only=True)
    try:
        return next(r for r in store.records(node, int(seq) - 1) if r.seq == int(seq))
    finally:
        store.close()


def test_a_dci_search_is_recorded_as_its_grpc_equivalent(
    site: Site, gateway: processes.Proc
) -> None:
    hid = site.households[4]
    reply = search(site, signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", hid)])))
    (token,) = reply.json()["header"]["meta"]["jisr_receipts"].values()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    with JisrClient(gateway.target, Credentials.from_pki(site.pki_dir, "ANSS")) as anss:
        answer = anss.household_status(PURPOSE, hid)
    dci, grpc = _record(site.state, claims["audit"]), _record(site.state, answer.receipt["audit"])
    assert dci.node != grpc.node  # two processes, two chains

    def same(r: AuditRecord) -> tuple[object, ...]:
        return (r.requester, r.method, r.purpose, r.basis, r.subjects, r.fields, r.decision)

    assert same(dci) == same(grpc)
    assert dci.method == "/jisr.v1.RegistryExchange/GetHouseholdStatus"


def test_an_envelope_addressed_to_another_receiver_is_refused(site: Site) -> None:
    body = envelope([item("HOUSEHOLD_ID", site.households[0])])
    body["header"]["receiver_id"] = "another-registry"
    reply = search(site, signed(site.pki_dir, body))
    assert reply.status_code == 400
    assert reply.json()["message"]["error"]["code"] == "err.receiver_id.invalid"


def test_a_negated_identifier_predicate_is_not_read_as_the_identifier(site: Site) -> None:
    negated = item("HOUSEHOLD_ID", "x")
    negated["search_criteria"]["query_type"] = "predicate"
    negated["search_criteria"]["query"] = [
        {
            "seq_num": 1,
            "condition": "not",
            "expression1": {
                "attribute_name": "HOUSEHOLD_ID", "operator": "eq",
                "attribute_value": site.households[0],
            },
        }
    ]  # fmt: skip
    (answer,) = search(site, signed(site.pki_dir, envelope([negated]))).json()["message"][
        "search_response"
    ]
    assert (answer["status"], answer["status_reason_code"]) == (
        "rjct", "rjct.search_criteria.invalid"
    )  # fmt: skip


def test_a_second_page_of_one_subject_is_rejected(site: Site) -> None:
    paged = item("HOUSEHOLD_ID", site.households[0])
    paged["search_criteria"]["pagination"] = {"page_size": 1, "page_number": 2}
    (answer,) = search(site, signed(site.pki_dir, envelope([paged]))).json()["message"][
        "search_response"
    ]
    assert answer["status_reason_code"] == "rjct.pagination.invalid"


def test_a_body_with_a_repeated_member_is_refused(site: Site) -> None:
    text = json.dumps(signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])])))
    repeated = text[:-1] + ', "signature": "again"}'
    reply = httpx.post(
        f"{site.url}/registry/sync/search", content=repeated,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {site.token()}"},
        timeout=30,
    )  # fmt: skip
    assert reply.status_code == 400
    assert reply.json()["message"]["error"]["code"] == "err.request.bad"


def _door_refusals(state: Path) -> list[AuditRecord]:
    store = open_audit_store(None, state, read_only=True)
    try:
        return [
            r for r in store.records()
            if r.method == "/dci.v1.SocialRegistry/SyncSearch" and r.decision == "deny"
        ]  # fmt: skip
    finally:
        store.close()


def test_a_nosql_expression_naming_one_household_is_answered_like_its_identifier(
    site: Site,
) -> None:
    asked = item("HOUSEHOLD_ID", "x")
    asked["search_criteria"]["query_type"] = "expression"
    asked["search_criteria"]["query"] = {
        "type": "ns:org:QueryType:NoSql",
        "value": {
            "expression": {
                "collection": "Group", "query": {"HOUSEHOLD_ID": {"$eq": site.households[4]}}
            }
        },
    }  # fmt: skip
    reply = search(site, signed(site.pki_dir, envelope([asked])))
    assert schemas.load().response("sync-search", reply.json()) == []
    (answer,) = reply.json()["message"]["search_response"]
    assert answer["status"] == "succ", answer
    (record,) = answer["data"]["reg_records"]
    assert record["@type"] == "Group"
    assert "poverty_score_band" not in record


def test_a_population_query_is_recorded_as_refused(site: Site) -> None:
    population = item("HOUSEHOLD_ID", "x")
    population["search_criteria"]["query_type"] = "expression"
    population["search_criteria"]["query"] = {"type": "ns:org:QueryType:expression", "value": {}}
    before = len(_door_refusals(site.state))
    search(site, signed(site.pki_dir, envelope([population])))
    after = _door_refusals(site.state)
    assert len(after) == before + 1
    assert after[-1].requester == "ANSS"


def test_an_expired_signature_is_refused(site: Site) -> None:
    body = signed(site.pki_dir, envelope([item("HOUSEHOLD_ID", site.households[0])]), age_s=400)
    reply = search(site, body)
    assert reply.status_code == 401
    error = reply.json()["message"]["error"]
    assert error["code"] == "err.signature.invalid"


def test_more_items_than_a_message_may_hold_are_rejected_whole(site: Site) -> None:
    items = [item("HOUSEHOLD_ID", site.households[i % 6]) for i in range(21)]
    reply = search(site, signed(site.pki_dir, envelope(items)))
    header = reply.json()["header"]
    assert (header["status"], header["status_reason_code"]) == (
        "rjct", "rjct.total_count.limit_exceeded"
    )  # fmt: skip
    assert reply.json()["message"]["search_response"] == []


def test_an_oversized_body_is_refused_unread(site: Site) -> None:
    reply = httpx.post(
        f"{site.url}/registry/sync/search", content=b"{" + b" " * 300_000 + b"}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {site.token()}"},
        timeout=30,
    )  # fmt: skip
    assert reply.status_code == 413
    assert reply.json()["message"]["error"]["code"] == "err.request.bad"
