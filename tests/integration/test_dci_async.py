"""The DCI facade's asynchronous side (docs/dci.md): a search ACKed, then answered by a
signed `on-search` callback to the partner's registered address, never elsewhere; the
statuses of a transaction, without its data; and the conformance mode the public
compliance suite needs (unsigned envelopes from one client, on loopback only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from gateway.dci import schemas, signature
from gateway.security.trust import key_from_jwk
from tests.support import processes, registry_rows
from tests.support.dci import Receiver, envelope, item, signed

pytestmark = pytest.mark.integration

WAIT_S = 30.0


@dataclass
class Site:
    proc: processes.Proc
    pki_dir: Path
    receiver: Receiver
    secrets: dict[str, str]
    households: list[str]

    @property
    def url(self) -> str:
        return f"http://{self.proc.target}"

    def token(self, client_id: str) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": self.secrets[client_id],
        }
        reply = httpx.post(f"{self.url}/oauth2/client/token", data=form, timeout=30)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])

    def post(
        self, path: str, body: dict[str, Any], client_id: str = "anss-async"
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}{path}",
            content=json.dumps(body),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token(client_id)}",
            },
            timeout=60,
        )


def _jisr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("dci-async")
    receiver = Receiver()
    clients = folder / "clients.json"
    secrets = {}
    for client_id, institution, extra in (
        ("anss-async", "ANSS", ["--callback", f"{receiver.base}/registry/"]),
        ("suite", "DEMO", []),
    ):
        added = _jisr(
            "dci", "client", "add", client_id, "--institution", institution,
            "--clients", str(clients), *extra,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        secrets[client_id] = added.stdout.strip()
    proc = processes.start(
        [
            "dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir),
            "--pki-dir", str(pki_dir), "--clients", str(clients),
            "--conformance-client", "suite",
        ],
        folder / "dci.log",
        env={"JISR_STATE_DIR": str(folder / "state")},
    )  # fmt: skip
    hids = [h.household_id for h in registry_rows.households(registry_dir, 4)]
    try:
        yield Site(proc, pki_dir, receiver, secrets, hids)
    finally:
        proc.stop()
        receiver.close()


def _async_search(site: Site, hid: str) -> tuple[dict[str, Any], httpx.Response]:
    body = envelope([item("HOUSEHOLD_ID", hid)])
    body["header"]["sender_uri"] = f"{site.receiver.base}/registry/on-search"
    return body, site.post("/registry/search", signed(site.pki_dir, body))


def test_an_asynchronous_search_is_acknowledged_then_answered_by_a_signed_callback(
    site: Site,
) -> None:
    body, reply = _async_search(site, site.households[0])
    assert reply.status_code == 202, reply.text
    assert schemas.load().response("ack", reply.json()) == []
    callback = site.receiver.next("/registry/on-search")
    assert schemas.load().response("on-search", callback) == []
    message = callback["message"]
    assert message["transaction_id"] == body["message"]["transaction_id"]
    assert message["correlation_id"] == reply.json()["message"]["correlation_id"]
    (answer,) = message["search_response"]
    assert answer["status"] == "succ"
    assert answer["data"]["reg_records"][0]["@type"] == "Group"
    jwks = httpx.get(f"{site.url}/.well-known/jwks.json", timeout=30).json()
    keys = {k["kid"]: key_from_jwk(k)[0] for k in jwks["keys"]}
    signature.verify_with(
        callback["signature"], callback["header"], message,
        sender_id=callback["header"]["sender_id"], keys=keys, now=time.time(),
    )  # fmt: skip


def test_a_callback_address_the_client_did_not_register_is_refused(site: Site) -> None:
    body = envelope([item("HOUSEHOLD_ID", site.households[1])])
    body["header"]["sender_uri"] = "http://127.0.0.1:9/registry/on-search"
    reply = site.post("/registry/search", signed(site.pki_dir, body))
    assert reply.status_code == 400
    assert reply.json()["message"]["error"]["code"] == "err.sender_uri.invalid"


def test_a_transactions_status_names_its_items_without_their_data(site: Site) -> None:
    body, _ = _async_search(site, site.households[2])
    site.receiver.next("/registry/on-search")
    transaction = body["message"]["transaction_id"]
    status = envelope([], action="txn-status")
    status["header"]["total_count"] = 1
    status["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "txnstatus_request": {
            "reference_id": uuid.uuid4().hex,
            "txn_type": "search",
            "attribute_type": "transaction_id",
            "attribute_value": transaction,
        },
    }
    reply = site.post("/registry/sync/txn/status", signed(site.pki_dir, status))
    assert reply.status_code == 200, reply.text
    assert schemas.load().response("sync-txn-status", reply.json()) == []
    known = reply.json()["message"]["txnstatus_response"]["txn_status"]
    assert known["transaction_id"] == transaction
    assert [s["status"] for s in known["search_response"]] == ["succ"]
    assert "data" not in json.dumps(known)


def test_an_unknown_transaction_has_no_status(site: Site) -> None:
    status = envelope([], action="txn-status")
    status["header"]["total_count"] = 1
    status["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "txnstatus_request": {
            "reference_id": "r", "txn_type": "search",
            "attribute_type": "transaction_id", "attribute_value": "never-asked",
        },
    }  # fmt: skip
    reply = site.post("/registry/sync/txn/status", signed(site.pki_dir, status))
    assert reply.json()["message"]["txnstatus_response"]["txn_status"]["search_response"] == []


def test_the_conformance_client_may_send_unsigned_envelopes(site: Site) -> None:
    body = {"signature": "unsigned-stub", **envelope([item("UIN", "TEST-001")], sender="DEMO")}
    reply = site.post("/registry/sync/search", body, client_id="suite")
    assert reply.status_code == 200, reply.text
    assert schemas.load().response("sync-search", reply.json()) == []


def test_the_conformance_client_still_needs_a_valid_signature_if_it_signs(site: Site) -> None:
    body = {"signature": "invalid-signature", **envelope([item("UIN", "1")], sender="DEMO")}
    reply = site.post("/registry/sync/search", body, client_id="suite")
    assert reply.status_code == 401
    assert reply.json()["message"]["error"]["code"] == "err.signature.invalid"


def test_conformance_mode_is_refused_outside_loopback(tmp_path: Path) -> None:
    refused = _jisr(
        "dci", "serve", "--listen", "0.0.0.0:0", "--conformance-client", "suite",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert refused.returncode == 2
    assert "refused outside loopback" in refused.stderr


def test_an_asynchronous_status_request_is_answered_by_a_callback(site: Site) -> None:
    status = envelope([], action="txn-status")
    status["header"] |= {
        "total_count": 1,
        "sender_uri": f"{site.receiver.base}/registry/txn/on-status",
    }
    status["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "txnstatus_request": {
            "reference_id": "r", "txn_type": "search",
            "attribute_type": "transaction_id", "attribute_value": "never-asked",
        },
    }  # fmt: skip
    reply = site.post("/registry/txn/status", signed(site.pki_dir, status))
    assert reply.status_code == 202, reply.text
    callback = site.receiver.next("/registry/txn/on-status")
    assert schemas.load().response("txn-on-status", callback) == []
    assert callback["message"]["correlation_id"] == reply.json()["message"]["correlation_id"]
