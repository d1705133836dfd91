"""DCI subscriptions (docs/dci.md, "Subscriptions"): a partner subscribes through the
facade with a signed envelope, the gateway's registry events reach its `notify` address
as signed envelopes carrying only its grant's fields, and it unsubscribes. A gateway and a
facade share one registry and state, as after `make run`: on SQLite, and on PostgreSQL
(where the facade's audit chain and the gateway's share the database)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore, open_audit_store
from gateway.dci import schemas
from tests.support import event_site, processes
from tests.support.dci import PURPOSE, Receiver, envelope, item, signed

pytestmark = pytest.mark.integration


@dataclass
class World:
    site: event_site.Site
    facade: processes.Proc
    receiver: Receiver
    secret: str
    state: Path

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        url = f"http://{self.facade.target}"
        form = {
            "grant_type": "client_credentials",
            "client_id": "anss",
            "client_secret": self.secret,
        }
        token = httpx.post(f"{url}/oauth2/client/token", data=form, timeout=30).json()[
            "access_token"
        ]
        return httpx.post(
            f"{url}{path}", json=signed(self.site.pki_dir, body),
            headers={"Authorization": f"Bearer {token}"}, timeout=60,
        )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, pki_dir: Path, tmp_path: Path) -> Iterator[World]:
    receiver = Receiver()
    clients = tmp_path / "clients.json"
    added = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "dci", "client", "add", "anss", "--institution",
         "ANSS", "--clients", str(clients), "--callback", f"{receiver.base}/registry/"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    with event_site.started_site(request.param, 1, pki_dir, tmp_path) as site:
        env = {"JISR_STATE_DIR": str(tmp_path / "state-0"), "JISR_EVENTS_POLL_SECONDS": "0.1"}
        if site.database_url:
            env["JISR_DATABASE_URL"] = site.database_url
        facade = processes.start(
            ["dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(site.data_dir),
             "--pki-dir", str(pki_dir), "--clients", str(clients)],
            tmp_path / "dci.log",
            env=env,
        )  # fmt: skip
        try:
            yield World(site, facade, receiver, added.stdout.strip(), tmp_path / "state-0")
        finally:
            facade.stop()
            receiver.close()


def _subscribe(world: World, household: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = envelope([], action="subscribe")
    body["header"] |= {
        "total_count": 1,
        "sender_uri": f"{world.receiver.base}/registry/on-subscribe",
    }
    body["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "subscribe_request": [
            {
                "reference_id": "r1",
                "timestamp": body["header"]["message_ts"],
                "subscribe_criteria": {
                    "reg_event_type": "person.died",
                    "filter": {"type": "HOUSEHOLD_ID", "value": household},
                    "notify_record_type": "jisr:ChangeEvent",
                    "authorize": {"purpose": {"code": event_site.ASD}},
                },
            }
        ],
    }
    reply = world.post("/registry/subscribe", body)
    assert reply.status_code == 202, reply.text
    return reply.json(), world.receiver.next("/registry/on-subscribe")


def test_a_subscription_made_through_the_facade_is_answered_with_its_code(world: World) -> None:
    household, _, _ = world.site.death()
    ack, callback = _subscribe(world, household)
    assert schemas.load().response("on-subscribe", callback) == []
    (answer,) = callback["message"]["subscribe_response"]
    assert answer["status"] == "succ", answer
    assert answer["subscriptions"][0]["code"].startswith("sub-")
    assert callback["message"]["correlation_id"] == ack["message"]["correlation_id"]


def test_a_death_in_the_household_is_notified_with_the_grants_fields(world: World) -> None:
    household, person, line = world.site.death()
    _, callback = _subscribe(world, household)
    code = callback["message"]["subscribe_response"][0]["subscriptions"][0]["code"]
    world.site.apply(line)
    notified = world.receiver.next("/registry/notify")
    assert schemas.load().response("notify", notified) == []
    assert notified["header"]["meta"]["subscription_code"] == code
    (event,) = notified["message"]["notify_event"]
    record = event["data"]["reg_records"]
    assert (record["type"], record["idcs"]) == ("EVENT_TYPE_PERSON_DIED", person)


def test_an_unsubscribed_code_is_confirmed_and_an_unknown_one_rejected(world: World) -> None:
    household, _, _ = world.site.death()
    _, callback = _subscribe(world, household)
    code = callback["message"]["subscribe_response"][0]["subscriptions"][0]["code"]
    body = envelope([], action="unsubscribe")
    body["header"] |= {
        "total_count": 2, "sender_uri": f"{world.receiver.base}/registry/on-unsubscribe"
    }  # fmt: skip
    body["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "timestamp": body["header"]["message_ts"],
        "subscription_codes": [code, "sub-0000000000000000"],
    }
    assert world.post("/registry/unsubscribe", body).status_code == 202
    answer = world.receiver.next("/registry/on-unsubscribe")
    assert schemas.load().response("on-unsubscribe", answer) == []
    message = answer["message"]
    assert message["subscription_status"] == [{"code": code, "status": "unsubscribe"}]
    assert (message["status"], message["status_reason_code"]) == (
        "rjct", "rjct.subscription_code.invalid"
    )  # fmt: skip


def test_a_subscription_for_a_type_the_grant_lacks_is_rejected(world: World) -> None:
    household, _, _ = world.site.death()
    body = envelope([], action="subscribe")
    body["header"] |= {
        "total_count": 1,
        "sender_uri": f"{world.receiver.base}/registry/on-subscribe",
    }
    body["message"] = {
        "transaction_id": uuid.uuid4().hex,
        "subscribe_request": [
            {
                "reference_id": "r1",
                "timestamp": body["header"]["message_ts"],
                "subscribe_criteria": {
                    "reg_event_type": "coverage.started",
                    "filter": {"type": "HOUSEHOLD_ID", "value": household},
                    "notify_record_type": "jisr:ChangeEvent",
                    "authorize": {"purpose": {"code": event_site.ASD}},
                },
            }
        ],
    }
    assert world.post("/registry/subscribe", body).status_code == 202
    (answer,) = world.receiver.next("/registry/on-subscribe")["message"]["subscribe_response"]
    assert (answer["status"], answer["status_reason_code"]) == ("rjct", "rjct.notify_types.invalid")
    assert answer["status_reason_message"].startswith("EVENT_TYPE_NOT_ALLOWED")


def test_a_dci_search_leaves_the_record_of_its_grpc_equivalent(world: World) -> None:
    household, _, _ = world.site.death()
    search = envelope([item("HOUSEHOLD_ID", household)])
    reply = world.post("/registry/sync/search", search)
    assert reply.json()["header"]["status"] == "succ", reply.text
    (token,) = reply.json()["header"]["meta"]["jisr_receipts"].values()
    dci_audit = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["audit"]
    grpc_audit = world.site.client("ANSS").household_status(PURPOSE, household).receipt["audit"]
    store = open_audit_store(world.site.database_url, world.state, read_only=True)
    try:
        dci, grpc = (_record(store, audit) for audit in (dci_audit, grpc_audit))
    finally:
        store.close()
    assert dci.node != grpc.node
    assert (dci.requester, dci.method, dci.purpose, dci.basis) == (
        grpc.requester, grpc.method, grpc.purpose, grpc.basis
    )  # fmt: skip
    assert (dci.subjects, dci.fields, dci.decision) == (grpc.subjects, grpc.fields, grpc.decision)


def _record(store: AuditStore, audit: str) -> AuditRecord:
    node, seq = audit.rsplit(":", 1)
    return next(r for r in store.records(node, int(seq) - 1) if r.seq == int(seq))
