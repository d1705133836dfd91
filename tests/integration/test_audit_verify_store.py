"""The live trail verified with a process per node (`jisr audit verify --jobs`) gives the
report the one-process verification gives, on SQLite and on PostgreSQL: the same records,
chains and findings, a tampered record named in whichever node it is."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.audit import chain
from gateway.audit import verify_store as verify_store_module
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint, link
from gateway.audit.store import open_audit_store
from gateway.audit.verify_store import verify_store
from gateway.security import pki
from gateway.server import checkpoint_signer
from tests.support import databases, processes

NODES = ("gw-a", "gw-b", "gw-c")
PER_NODE = 60
CHECKPOINT_EVERY = 25


# The forked path runs in an interpreter of its own, as `jisr audit verify` does: forking
# this test runner, whose other tests may have left threads, is what the code refuses to
# do. It prints the report's figures and, for each fork, the store's files and sockets the
# process had open then (the workers must inherit none).
FORKED = """
import json, os, sys
from pathlib import Path
from gateway.audit.verify_store import verify_store
from gateway.security import pki

def open_now():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "audit.sqlite" in target or target.startswith("socket:"):
            found.append(target)
    return found

forks = []
os.register_at_fork(before=lambda: forks.append(open_now()))
url, state, keys = sys.argv[1] or None, Path(sys.argv[2]), Path(sys.argv[3])
report = verify_store(url, state, pki.gateway_jwks(keys), jobs=2)
figures = [report.ok, report.records, report.nodes, report.checkpoints]
print(json.dumps({"report": figures, "forks": forks}))
"""


start_method = verify_store_module.start_method  # as shipped, before spawned_here


@pytest.fixture(autouse=True)
def spawned_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_store called in this test runner spawns its workers (never forks it)."""
    monkeypatch.setattr(verify_store_module, "start_method", lambda: "spawn")


def _draft(node: str, i: int) -> AuditRecord:
    return AuditRecord(
        node=node,
        seq=0,
        at_us=1_764_000_000_000_000 + i,
        trace_id="",
        requester="DEMO",
        requester_sub="svc",
        method="/jisr.v1.RegistryExchange/VerifyEligibility",
        purpose="ASD_ELIGIBILITY",
        basis="Loi 58-23",
        subjects=(f"{i:064x}",),
        fields=("programme", "eligible"),
        decision="permit",
        reason="",
        rh=f"rh-{node}-{i}",
        sh="sh",
        jti=f"{node}-{i}",
        part=0,
        latency_us=100,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def trail(
    request: pytest.FixtureRequest, pki_dir: Path, tmp_path: Path
) -> Iterator[tuple[str | None, Path]]:
    """Three nodes' chains, PER_NODE records each, a signed checkpoint every
    CHECKPOINT_EVERY records of a node."""
    sign = checkpoint_signer(pki_dir)
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url:
        with closing(open_audit_store(url, tmp_path)) as store:
            for node in NODES:
                seq, prev = 0, GENESIS
                for i in range(PER_NODE):
                    record = link(seq, prev, _draft(node, i))
                    store.append_batch([record])
                    seq, prev = record.seq, record.hash
                    if seq % CHECKPOINT_EVERY == 0:
                        store.append_checkpoint(sign(Checkpoint(node, seq, prev, record.at_us)))
        yield url, tmp_path


def _sql(url: str | None, state_dir: Path, statement: str) -> None:
    """As an attacker with database access (triggers off)."""
    if url is None:
        with closing(sqlite3.connect(state_dir / "audit.sqlite", isolation_level=None)) as db:
            db.execute("DROP TRIGGER IF EXISTS audit_record_no_update")
            db.execute("DROP TRIGGER IF EXISTS audit_record_no_delete")
            db.execute(statement)
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("ALTER TABLE audit_record DISABLE TRIGGER USER")
        pg.execute(statement.encode())


def _one_process(url: str | None, state_dir: Path, jwks: dict[str, Any]) -> chain.Report:
    with closing(open_audit_store(url, state_dir, read_only=True)) as store:
        return chain.verify(store.records(), store.checkpoints(), jwks)


def test_an_intact_trail_verifies_alike_with_spawned_workers(
    trail: tuple[str | None, Path], pki_dir: Path
) -> None:
    url, state_dir = trail
    jwks = pki.gateway_jwks(pki_dir)
    report = verify_store(url, state_dir, jwks, jobs=2)
    assert report.ok
    assert (report.records, report.nodes, report.checkpoints) == (180, 3, 6)
    assert report == _one_process(url, state_dir, jwks)


def test_an_intact_trail_verifies_alike_with_forked_workers_that_share_no_store(
    trail: tuple[str | None, Path], pki_dir: Path
) -> None:
    url, state_dir = trail
    done = subprocess.run(
        [sys.executable, "-c", FORKED, url or "", str(state_dir), str(pki_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=processes.environment(),
    )
    result = json.loads(done.stdout)
    alone = _one_process(url, state_dir, pki.gateway_jwks(pki_dir))
    assert result["report"] == [alone.ok, alone.records, alone.nodes, alone.checkpoints]
    assert result["forks"]  # the workers were forked...
    assert all(opened == [] for opened in result["forks"])  # ...with no store open


@pytest.mark.parametrize(
    ("statement", "kind", "seq"),
    [
        (
            "UPDATE audit_record SET purpose = 'OTHER' WHERE node = 'gw-b' AND seq = 40",
            "modified",
            40,
        ),
        ("DELETE FROM audit_record WHERE node = 'gw-c' AND seq = 7", "missing", 7),
        ("DELETE FROM audit_record WHERE node = 'gw-a' AND seq > 45", "truncated", 46),
        ("DELETE FROM audit_record WHERE node = 'gw-c'", "truncated", 1),
        ("UPDATE audit_record SET prev_hash = 'x' WHERE node = 'gw-a' AND seq = 9", "modified", 9),
        (
            "UPDATE audit_record SET subjects = '[\",\"]' WHERE node = 'gw-b' AND seq = 2",
            "modified",
            2,
        ),
        (
            "UPDATE audit_record SET seq = seq + 100 WHERE node = 'gw-b' AND seq = 60",
            "modified",
            160,
        ),
    ],
    ids=[
        "modified",
        "deleted",
        "truncated",
        "all-records-of-a-node",
        "relinked",
        "subjects",
        "moved",
    ],
)
def test_tampering_is_named_alike_with_a_process_per_node(
    trail: tuple[str | None, Path], pki_dir: Path, statement: str, kind: str, seq: int
) -> None:
    url, state_dir = trail
    _sql(url, state_dir, statement)
    jwks = pki.gateway_jwks(pki_dir)
    report = verify_store(url, state_dir, jwks, jobs=3)
    assert not report.ok
    assert [(f.kind, f.seq) for f in report.findings] == [(kind, seq)]
    assert report == _one_process(url, state_dir, jwks)


def test_the_cli_names_the_tampered_record_with_its_jobs(
    trail: tuple[str | None, Path], pki_dir: Path
) -> None:
    url, state_dir = trail
    _sql(url, state_dir, "UPDATE audit_record SET reason = 'X' WHERE node = 'gw-b' AND seq = 3")
    env = {**os.environ, "JISR_STATE_DIR": str(state_dir), "JISR_PKI_DIR": str(pki_dir)}
    if url:
        env["JISR_DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode != 0
    assert "gw-b:3" in result.stdout + result.stderr
    assert "gw-a done (60 records)" in result.stderr


def test_workers_are_forked_from_a_single_threaded_caller_and_spawned_beside_threads() -> None:
    alone = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.audit import verify_store as v; print(v.start_method())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert alone.stdout.strip() == "fork"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert start_method() == "spawn"
    finally:
        stop.set()
        other.join()
