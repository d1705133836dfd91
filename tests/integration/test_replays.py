"""One rule for replays, wherever they are caught (docs/security.md, "Replays"): the
second use of a token is refused UNAUTHENTICATED REPLAYED with a deny receipt, and leaves
exactly one audit record of its own, which the receipt names; the first use's record is
untouched. Caught in the same process (memory), at another replica sharing the store, and
after a restart (the durable store), on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient, error_from
from gateway.security import receipts
from tests.integration.test_audit import _query
from tests.support import databases, identities, processes, registry_rows

AUDIT_PURPOSE = "DATA_PROTECTION_AUDIT"


@dataclass
class Replicas:
    """Two gateway processes on one audit store, and how to start more on it."""

    registry_dir: Path
    pki_dir: Path
    folder: Path
    url: str | None
    procs: list[processes.Proc]

    def start(self) -> processes.Proc:
        env = {"JISR_STATE_DIR": str(self.folder / "state")}
        if self.url:
            env["JISR_DATABASE_URL"] = self.url
        args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.registry_dir)]
        log = self.folder / f"gateway-{len(self.procs)}.log"
        proc = processes.start([*args, "--pki-dir", str(self.pki_dir)], log, env=env)
        self.procs.append(proc)
        return proc


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Replicas]:
    (tmp_path / "state").mkdir()
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url:
        running = Replicas(registry_dir, pki_dir, tmp_path, url, [])
        running.start()
        running.start()
        yield running
        for proc in running.procs:
            proc.stop()


@dataclass(frozen=True)
class Signed:
    """One signed request, to be sent as many times as a test likes."""

    method: str
    body: bytes
    token: str
    jti: str


def signed(pki_dir: Path, registry_dir: Path, purpose: str) -> Signed:
    """A DEMO GetHouseholdStatus request; ASD_ELIGIBILITY is granted, SCHOOL_SUPPORT not."""
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 901")
    body = pb.GetHouseholdStatusRequest(
        purpose=purpose, subject=pb.Subject(household_id=hid)
    ).SerializeToString()
    jti = secrets.token_urlsafe(18)
    method = "/jisr.v1.RegistryExchange/GetHouseholdStatus"
    creds = Credentials.from_pki(pki_dir, "DEMO")
    return Signed(method, body, creds.signer.request_token(method, purpose, body, jti=jti), jti)


def send(target: str, pki_dir: Path, request: Signed) -> tuple[str, dict[str, object] | None]:
    """(reason or "OK", verified receipt claims) of one sending of `request`."""
    creds = Credentials.from_pki(pki_dir, "DEMO")
    try:
        _, call = identities.raw_call(
            target, creds, request.method.rsplit("/", 1)[1], request.body, [request.token]
        )
    except grpc.RpcError as exc:
        error = error_from(exc, creds.gateway_jwks)
        return error.reason, error.receipt
    trailers = dict(call.trailing_metadata() or ())
    return "OK", receipts.verify(str(trailers["x-jisr-receipt"]), creds.gateway_jwks)


def records_of(target: str, pki_dir: Path, jti: str, request_method: str) -> list[apb.AccessRecord]:
    """Every record carrying, or answering a replay of, the token `jti` (asked as CNDP)."""
    cndp = Credentials.from_pki(pki_dir, "CNDP")
    with JisrClient(target, cndp) as client:
        records = _query(client, requester="DEMO", method=request_method)
    return [r for r in records if r.request_hash and r.jti in (jti, "")]


def _replays(target: str, pki_dir: Path, request: Signed) -> int:
    records = records_of(target, pki_dir, request.jti, request.method)
    return sum(r.reason == "REPLAYED" and not r.jti for r in records)


def _replayed_properly(target: str, pki_dir: Path, request: Signed, first_reason: str) -> None:
    before = _replays(target, pki_dir, request)
    reason, receipt = send(target, pki_dir, request)
    assert reason == "REPLAYED"
    assert receipt is not None
    assert receipt["decision"] == "deny"
    assert receipt["reason"] == "REPLAYED"
    assert receipt["jti"] == request.jti
    records = {r.record_id: r for r in records_of(target, pki_dir, request.jti, request.method)}
    assert receipt["audit"] in records
    assert records[str(receipt["audit"])].reason == "REPLAYED"
    assert _replays(target, pki_dir, request) == before + 1  # exactly one record of its own
    firsts = [r for r in records.values() if r.jti == request.jti]
    assert [(r.decision, r.reason) for r in firsts] == [
        ("permit" if first_reason == "OK" else "deny", "" if first_reason == "OK" else first_reason)
    ]


@pytest.mark.parametrize("purpose", ["ASD_ELIGIBILITY", "SCHOOL_SUPPORT"])
def test_a_replay_in_the_same_process_is_refused_with_a_receipt_and_a_record(
    replicas: Replicas, purpose: str
) -> None:
    request = signed(replicas.pki_dir, replicas.registry_dir, purpose)
    first, _ = send(replicas.procs[0].target, replicas.pki_dir, request)
    _replayed_properly(replicas.procs[0].target, replicas.pki_dir, request, first)


@pytest.mark.parametrize("purpose", ["ASD_ELIGIBILITY", "SCHOOL_SUPPORT"])
def test_a_replay_at_another_replica_is_refused_with_a_receipt_and_a_record(
    replicas: Replicas, purpose: str
) -> None:
    request = signed(replicas.pki_dir, replicas.registry_dir, purpose)
    first, _ = send(replicas.procs[0].target, replicas.pki_dir, request)
    assert first == ("OK" if purpose == "ASD_ELIGIBILITY" else "PURPOSE_NOT_ALLOWED")
    _replayed_properly(replicas.procs[1].target, replicas.pki_dir, request, first)


@pytest.mark.parametrize("purpose", ["ASD_ELIGIBILITY", "SCHOOL_SUPPORT"])
def test_a_replay_after_a_restart_is_refused_with_a_receipt_and_a_record(
    replicas: Replicas, purpose: str
) -> None:
    request = signed(replicas.pki_dir, replicas.registry_dir, purpose)
    first, _ = send(replicas.procs[0].target, replicas.pki_dir, request)
    for proc in replicas.procs:
        assert proc.stop() == 0
    restarted = replicas.start()
    _replayed_properly(restarted.target, replicas.pki_dir, request, first)
