"""The audit trail as a DPO relies on it: every exchange recorded before its reply, no raw
identifier stored, and `jisr audit verify` naming the record for each kind of tampering.
Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from gateway.audit.store import open_audit_store
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, JisrClient, JisrError, error_from
from tests.support import databases, identities, processes, registry_rows

PURPOSE = "ASD_ELIGIBILITY"


@dataclass
class Trail:
    """A finished trail (gateway stopped, final checkpoint written) and SQL on it."""

    backend: str
    state_dir: Path
    url: str | None
    pki_dir: Path
    subjects: list[str]

    def env(self) -> dict[str, str]:
        env = {"JISR_STATE_DIR": str(self.state_dir), "JISR_PKI_DIR": str(self.pki_dir)}
        if self.url:
            env["JISR_DATABASE_URL"] = self.url
        return env

    def sql(self, *statements: str) -> list[tuple[object, ...]]:
        """Run statements as an attacker with database access would (triggers off)."""
        rows: list[tuple[object, ...]] = []
        if self.url is None:
            db = sqlite3.connect(self.state_dir / "audit.sqlite", isolation_level=None)
            try:
                db.execute("DROP TRIGGER IF EXISTS audit_record_no_update")
                db.execute("DROP TRIGGER IF EXISTS audit_record_no_delete")
                for statement in statements:
                    rows = db.execute(statement).fetchall()
            finally:
                db.close()
            return rows
        with psycopg.connect(self.url, autocommit=True) as pg:
            pg.execute("ALTER TABLE audit_record DISABLE TRIGGER USER")
            for statement in statements:
                cur = pg.execute(statement.encode())
                rows = cur.fetchall() if cur.description else []
        return rows

    def verify(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "verify"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, **self.env()},
        )

    def node(self) -> str:
        return str(self.sql("SELECT node FROM audit_record ORDER BY at_us LIMIT 1")[0][0])


def _serve(
    registry_dir: Path, pki_dir: Path, folder: Path, url: str | None, log: str
) -> processes.Proc:
    env = {"JISR_STATE_DIR": str(folder / "state"), "JISR_AUDIT_CHECKPOINT_EVERY": "10"}
    if url:
        env["JISR_DATABASE_URL"] = url
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    return processes.start([*args, "--pki-dir", str(pki_dir)], folder / log, env=env)


@pytest.fixture(params=["sqlite", "postgresql"])
def trail(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Trail]:
    """35 exchanges (5 denied) through a fresh gateway, then a clean stop."""
    (tmp_path / "state").mkdir()
    hids = [h.household_id for h in registry_rows.households(registry_dir, 30)]
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url:
        proc = _serve(registry_dir, pki_dir, tmp_path, url, "gateway.log")
        try:
            creds = Credentials.from_pki(pki_dir, "DEMO")
            with JisrClient(proc.target, creds) as client:
                for hid in hids:
                    client.verify(PURPOSE, hid, "ASD")
                for hid in hids[:5]:
                    with pytest.raises(JisrError):
                        client.verify("SCHOOL_SUPPORT", hid, "ASD")
        finally:
            assert proc.stop() == 0
        yield Trail(request.param, tmp_path / "state", url, pki_dir, hids)


def test_untouched_trail_verifies(trail: Trail) -> None:
    result = trail.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID" in result.stdout


def test_denied_request_leaves_a_record_with_its_reason(trail: Trail) -> None:
    rows = trail.sql("SELECT reason FROM audit_record WHERE decision = 'deny'")
    assert [r[0] for r in rows] == ["PURPOSE_NOT_ALLOWED"] * 5


def test_no_raw_identifier_is_stored(trail: Trail) -> None:
    tables = ["audit_record", "audit_subject", "audit_subject_recent", "audit_checkpoint"]
    dump = " ".join(str(trail.sql(f"SELECT * FROM {t}")) for t in tables)
    assert not [s for s in trail.subjects if s in dump]


def _names(result: subprocess.CompletedProcess[str], node: str, seq: int, kind: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{kind}: record {node}:{seq}" in result.stdout, result.stdout


def test_modified_record_is_named(trail: Trail) -> None:
    node = trail.node()
    trail.sql(f"UPDATE audit_record SET purpose = 'FORGED' WHERE node = '{node}' AND seq = 7")
    _names(trail.verify(), node, 7, "modified")


def test_deleted_record_is_named(trail: Trail) -> None:
    node = trail.node()
    trail.sql(f"DELETE FROM audit_record WHERE node = '{node}' AND seq = 12")
    _names(trail.verify(), node, 12, "missing")


def test_inserted_record_is_named(trail: Trail) -> None:
    node = trail.node()
    where = f"node = '{node}'"
    trail.sql(
        f"UPDATE audit_record SET seq = seq + 1000 WHERE {where} AND seq >= 8",
        f"UPDATE audit_record SET seq = seq - 999 WHERE {where} AND seq >= 1000",
        f"CREATE TEMP TABLE forged AS SELECT * FROM audit_record WHERE {where} AND seq = 3",
        "UPDATE forged SET seq = 8, jti = ''",
        "INSERT INTO audit_record SELECT * FROM forged",
    )
    result = trail.verify()
    assert result.returncode == 1
    assert f"record {node}:8" in result.stdout or f"record {node}:9" in result.stdout


def test_reordered_records_are_named(trail: Trail) -> None:
    node = trail.node()
    where = f"node = '{node}'"
    trail.sql(
        f"UPDATE audit_record SET seq = 999999 WHERE {where} AND seq = 10",
        f"UPDATE audit_record SET seq = 10 WHERE {where} AND seq = 11",
        f"UPDATE audit_record SET seq = 11 WHERE {where} AND seq = 999999",
    )
    result = trail.verify()
    assert result.returncode == 1
    assert f"record {node}:10" in result.stdout


def test_truncation_after_a_checkpoint_is_named(trail: Trail) -> None:
    node = trail.node()
    trail.sql(f"DELETE FROM audit_record WHERE node = '{node}' AND seq > 15")
    result = trail.verify()
    assert result.returncode == 1
    assert "truncated" in result.stdout
    assert f"record {node}:" in result.stdout


def test_every_receipt_has_its_record_after_a_sigkill_under_load(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    proc = _serve(registry_dir, pki_dir, tmp_path, None, "first.log")
    hids = [h.household_id for h in registry_rows.households(registry_dir, 200)]
    creds = Credentials.from_pki(pki_dir, "DEMO")
    received: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with JisrClient(proc.target, creds, timeout=5) as client:
            for hid in hids * 50:  # bounded in count; the kill ends it sooner
                if stop.is_set():
                    return
                try:
                    received.append(client.verify(PURPOSE, hid, "ASD").receipt["audit"])
                except JisrError:
                    return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(received) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(received) >= 200

    restarted = _serve(registry_dir, pki_dir, tmp_path, None, "second.log")
    restarted.stop()
    store = open_audit_store(None, tmp_path / "state")
    try:
        stored = {r.record_id for r in store.records()}
    finally:
        store.close()
    assert set(received) <= stored
    result = Trail("sqlite", tmp_path / "state", None, pki_dir, []).verify()
    assert result.returncode == 0, result.stdout + result.stderr


def _jisr(trail: Trail, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **trail.env()},
    )


def test_an_exported_bundle_verifies_offline_and_a_forged_line_is_named(
    trail: Trail, tmp_path: Path
) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    out = tmp_path / "evidence"
    exported = _jisr(trail, "audit", "export", "--from", today, "--to", today, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    jwks = tmp_path / "jwks.json"
    jwks.write_text(_jisr(trail, "keys", "--dir", str(trail.pki_dir), "export").stdout)
    verified = _jisr(trail, "audit", "verify", str(out), "--jwks", str(jwks))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lines = (out / "records.jsonl").read_text().splitlines()
    lines[4] = lines[4].replace("ASD_ELIGIBILITY", "FORGED_PURPOSE")
    (out / "records.jsonl").write_text("\n".join(lines) + "\n")
    forged = _jisr(trail, "audit", "verify", str(out), "--jwks", str(jwks))
    assert forged.returncode == 1
    assert "records.jsonl" in forged.stdout


PORTAL_PURPOSE = "CITIZEN_ACCESS_REQUEST"
AUDIT_PURPOSE = "DATA_PROTECTION_AUDIT"


def _query(client: JisrClient, **filters: object) -> list[apb.AccessRecord]:
    request = apb.QueryAccessRequest(purpose=AUDIT_PURPOSE, **filters)  # type: ignore[arg-type]
    method = "/jisr.v1.AuditTrail/QueryAccess"
    body = request.SerializeToString()
    token = client.credentials.signer.request_token(method, AUDIT_PURPOSE, body)
    channel = identities.channel(client.target, client.credentials)
    with channel:
        stream = channel.unary_stream(method)(
            body, timeout=30, metadata=(("x-jisr-signature", token),)
        )
        pages = [apb.QueryAccessResponse.FromString(raw) for raw in stream]
    return [record for page in pages for record in page.records]


def test_a_dpo_sees_its_own_institutions_requests_and_the_regulator_sees_all(
    gateway: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 77")
    with (
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS")) as anss,
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as demo,
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp,
    ):
        anss.verify("ASD_ELIGIBILITY", hid, "ASD")
        demo.verify("ASD_ELIGIBILITY", hid, "ASD")
        own = _query(anss, subject=pb.Subject(household_id=hid))
        everyone = _query(cndp, subject=pb.Subject(household_id=hid))
    assert {r.requester for r in own} == {"ANSS"}
    assert {"ANSS", "DEMO"} <= {r.requester for r in everyone}
    assert hid not in str(everyone)


def test_a_citizen_portal_gets_the_access_report_of_a_household(
    gateway: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 78")
    with (
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS")) as anss,
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANR")) as portal,
    ):
        anss.verify("ASD_ELIGIBILITY", hid, "ASD")
        report = portal.call(
            "AccessReport",
            apb.AccessReportRequest(purpose=PORTAL_PURPOSE, subject=pb.Subject(household_id=hid)),
            apb.AccessReportResponse,
            PORTAL_PURPOSE,
            service="jisr.v1.AuditTrail",
        ).message
    # Other tests of the session may have read this household too (as DEMO): ANSS's only.
    entries = [e for e in report.entries if e.institution == "ANSS"]
    assert [(e.institution, e.purpose, e.decision) for e in entries] == [
        ("ANSS", "ASD_ELIGIBILITY", "permit")
    ]
    assert "eligible" in entries[0].fields


def test_an_institution_without_an_audit_grant_cannot_read_the_trail(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    creds = Credentials.from_pki(pki_dir, "ANR")
    with JisrClient(gateway.target, creds) as portal, pytest.raises(JisrError) as err:
        portal.call(
            "VerifyIntegrity",
            apb.VerifyIntegrityRequest(purpose=AUDIT_PURPOSE),
            apb.VerifyIntegrityResponse,
            AUDIT_PURPOSE,
            service="jisr.v1.AuditTrail",
        )
    assert err.value.reason == "PURPOSE_NOT_ALLOWED"


def test_verify_integrity_over_grpc_reports_a_sound_trail(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp:
        answer = cndp.call(
            "VerifyIntegrity",
            apb.VerifyIntegrityRequest(purpose=AUDIT_PURPOSE),
            apb.VerifyIntegrityResponse,
            AUDIT_PURPOSE,
            service="jisr.v1.AuditTrail",
        ).message
    assert answer.ok
    assert answer.records > 0


def test_an_unwritable_trail_fails_closed(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    with databases.postgres_schema() as url:
        proc = _serve(registry_dir, pki_dir, tmp_path, url, "gateway.log")
        try:
            hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
            with JisrClient(proc.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
                client.verify(PURPOSE, hid, "ASD")
                with psycopg.connect(url, autocommit=True) as pg:
                    pg.execute("ALTER TABLE audit_record RENAME TO audit_record_gone")
                with pytest.raises(JisrError) as err:
                    client.verify(PURPOSE, hid, "ASD")
        finally:
            proc.stop()
    assert (err.value.code.name, err.value.reason) == ("UNAVAILABLE", "AUDIT_UNAVAILABLE")
    assert err.value.receipt is None


def test_a_batch_whose_record_fails_ends_the_stream_at_once_and_is_not_answered(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    """A batch's answer is sent only once its record is durable, while the stream goes on
    to read the next batch: when the trail breaks after the first answer, a caller that
    waits for each answer before sending more learns AUDIT_UNAVAILABLE at once (not the
    idle timeout, nor its own deadline), and the batch is not answered."""
    (tmp_path / "state").mkdir()
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    answered, received = threading.Event(), list[int]()
    with databases.postgres_schema() as url:
        proc = _serve(registry_dir, pki_dir, tmp_path, url, "gateway.log")

        def batches() -> Iterator[list[str]]:
            for k in range(3):
                if k == 1:
                    with psycopg.connect(url, autocommit=True) as pg:
                        pg.execute("ALTER TABLE audit_record RENAME TO audit_record_gone")
                yield [hid]
                answered.wait(40)  # the caller waits for this answer before its next batch
                answered.clear()

        def answers(client: JisrClient) -> None:
            # 40 s: less than the stream's idle timeout (60 s), more than a record's wait
            for results in client.verify_batches(PURPOSE, "ASD", batches(), timeout=40):
                received.append(results.batch_index)
                answered.set()

        try:
            creds = Credentials.from_pki(pki_dir, "DEMO")
            with JisrClient(proc.target, creds) as client, pytest.raises(JisrError) as err:
                answers(client)
        finally:
            answered.set()  # the request thread's generator, if still waiting
            proc.stop()
    assert (err.value.code.name, err.value.reason) == ("UNAVAILABLE", "AUDIT_UNAVAILABLE")
    assert received == [0]


def test_a_bad_page_token_is_invalid_and_the_failure_is_recorded(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    creds = Credentials.from_pki(pki_dir, "CNDP")
    request = apb.QueryAccessRequest(purpose=AUDIT_PURPOSE, page_token="A")
    method = "/jisr.v1.AuditTrail/QueryAccess"
    body = request.SerializeToString()
    token = creds.signer.request_token(method, AUDIT_PURPOSE, body)
    with identities.channel(gateway.target, creds) as channel:
        stream = channel.unary_stream(method)(
            body, timeout=30, metadata=(("x-jisr-signature", token),)
        )
        with pytest.raises(grpc.RpcError) as err:
            list(stream)
    error = error_from(err.value)
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_PAGE")


def test_one_record_is_found_by_the_id_its_receipt_quotes(
    gateway: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 79")
    with (
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "ANSS")) as anss,
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp,
    ):
        audit_id = anss.verify("ASD_ELIGIBILITY", hid, "ASD").receipt["audit"]
        found = _query(cndp, record_id=audit_id)
    assert [f"{r.node}:{r.seq}" for r in found] == [audit_id]
    assert found[0].requester == "ANSS"


@pytest.mark.parametrize("record_id", ["17", "node:", "node:0", ":5", "node:x"])
def test_a_malformed_record_id_is_invalid(
    gateway: processes.Proc, pki_dir: Path, record_id: str
) -> None:
    with (
        JisrClient(gateway.target, Credentials.from_pki(pki_dir, "CNDP")) as cndp,
        pytest.raises(grpc.RpcError) as err,
    ):
        _query(cndp, record_id=record_id)
    error = error_from(err.value)
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_RECORD_ID")
    assert error.metadata.get("field") == "record_id"
