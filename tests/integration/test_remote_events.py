"""A remote institution's changes reach subscribers: CNSS runs its own MinistryBackend
(`jisr backend serve`, its own process and its own registry file), the gateway reads its
change journal through `JournalHeads` and `StreamJournal` over mTLS, and a source that is
down or answers outside the contract holds back no other source (docs/events.md,
"Journals of remote institutions")."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from adapters.demo_data import generate
from gateway.base.wire import GATEWAY_CLIENT
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.events import Events
from tests.support import databases, identities, processes, registry_rows
from tests.support.event_site import AMO, WAIT_S, programmes_file, read

pytestmark = pytest.mark.integration

_ids = itertools.count(1)


@dataclass
class Remote:
    """A gateway with CNSS remote, and CNSS's backend on a registry of its own."""

    gateway: processes.Proc
    backend: processes.Proc
    gateway_data: Path
    backend_data: Path
    pki_dir: Path
    stack: ExitStack

    def events(self, institution: str, purpose: str) -> Events:
        creds = Credentials.from_pki(self.pki_dir, institution)
        client = self.stack.enter_context(JisrClient(self.gateway.target, creds, timeout=30))
        return Events(client, purpose)


def _apply(data_dir: Path, *changes: dict[str, object]) -> None:
    path = data_dir / f"changes-{next(_ids)}.ndjson"
    path.write_text("".join(json.dumps(c) + "\n" for c in changes), encoding="utf-8")
    done = subprocess.run(
        processes.jisr("registry", "apply", str(path), "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _uncovered(data_dir: Path) -> str:
    """A living member with no coverage."""
    with closing(registry_rows.connect(data_dir)) as db:
        row = db.execute(
            "SELECT m.idcs FROM membership m JOIN person p USING (idcs)"
            " WHERE p.vital_status = 1 AND m.idcs NOT IN (SELECT idcs FROM coverage)"
            " ORDER BY m.idcs LIMIT 1 OFFSET ?",
            (next(_ids),),
        ).fetchone()
    return str(row[0])


def _coverage(idcs: str) -> dict[str, object]:
    return {
        "id": f"CNSS-R-{next(_ids)}",
        "source": "CNSS",
        "type": "coverage.started",
        "effective": "2026-11-10",
        "idcs": idcs,
        "scheme": "AMO_SALARIES",
    }


def _death(idcs: str) -> dict[str, object]:
    return {
        "id": f"RNP-R-{next(_ids)}",
        "source": "RNP",
        "type": "person.died",
        "effective": "2026-11-10",
        "idcs": idcs,
    }


def _until_types(events: Events, sid: str, wanted: set[str]) -> list[epb.ChangeEvent]:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = [n.event for n in read(events, sid) if n.event.event_id in wanted]
        if len(got) >= len(wanted) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _start_backend(
    data_dir: Path, pki_dir: Path, log: Path, listen: str = "127.0.0.1:0"
) -> processes.Proc:
    args = ["backend", "serve", "--institutions", "CNSS", "--listen", listen]
    return processes.start([*args, "--data-dir", str(data_dir), "--pki-dir", str(pki_dir)], log)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def remote(
    request: pytest.FixtureRequest, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Remote]:
    """The gateway's state on SQLite, or on PostgreSQL."""
    folder = tmp_path_factory.mktemp("remote-events")
    gateway_data, backend_data = folder / "gateway-data", folder / "cnss-data"
    generate(gateway_data, 300, 5)
    generate(backend_data, 300, 5)  # the same people: CNSS's own copy of what it holds
    backend = _start_backend(backend_data, pki_dir, folder / "backend.log")
    env = {
        "JISR_EVENTS_POLL_SECONDS": "0.1",
        "JISR_DUE_PROCESS_SWEEP_SECONDS": "0.1",
        "JISR_PROGRAMMES": str(programmes_file(folder, {"AMOT": 1.0, "ASD": 1.0})),
        "JISR_REMOTE_CNSS": backend.target,
        "JISR_STATE_DIR": str(folder / "state"),
    }
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(gateway_data)]
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url, ExitStack() as stack:
        if url:
            env["JISR_DATABASE_URL"] = url
        gateway = processes.start(
            [*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env=env
        )
        remote = Remote(gateway, backend, gateway_data, backend_data, pki_dir, stack)
        try:
            yield remote
        finally:
            stack.close()
            assert gateway.stop() == 0
            remote.backend.stop()  # the one running now (a test restarts it)


def test_a_coverage_started_at_cnss_reaches_its_subscriber(remote: Remote) -> None:
    events = remote.events("CNSS", AMO)
    sid = events.create(["coverage.started"]).message.subscription.subscription_id
    person = _uncovered(remote.backend_data)
    line = _coverage(person)
    _apply(remote.backend_data, line)
    (got,) = _until_types(events, sid, {str(line["id"])})
    assert (got.source, got.idcs, got.scheme) == ("CNSS", person, "AMO_SALARIES")
    assert got.household_id  # found in the gateway's own RSU


def test_cnss_rows_in_the_gateways_own_registry_are_not_read(remote: Remote) -> None:
    """CNSS is remote: its backend's journal is the only one read for source CNSS."""
    events = remote.events("CNSS", AMO)
    sid = events.create(["coverage.started"]).message.subscription.subscription_id
    local = _coverage(_uncovered(remote.gateway_data))
    _apply(remote.gateway_data, local)
    remote_line = _coverage(_uncovered(remote.backend_data))
    _apply(remote.backend_data, remote_line)
    got = _until_types(events, sid, {str(remote_line["id"])})
    ids = {e.event_id for e in got} | {n.event.event_id for n in read(events, sid)}
    assert str(remote_line["id"]) in ids
    assert str(local["id"]) not in ids


def test_the_backend_serves_only_its_own_sources(remote: Remote) -> None:
    creds = Credentials.from_pki(remote.pki_dir, GATEWAY_CLIENT)
    with identities.channel(remote.backend.target, creds) as channel:
        stub = backend_pb2_grpc.MinistryBackendStub(channel)
        heads = stub.JournalHeads(backend_pb2.JournalHeadsRequest(), timeout=30).heads
        assert set(heads) <= {"CNSS"}
        request = backend_pb2.StreamJournalRequest(source="RNP", after_seq=0, limit=10)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamJournal(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_backend_down_holds_back_no_other_source_and_is_read_again_once_back(
    remote: Remote, tmp_path: Path
) -> None:
    demo = remote.events("DEMO", "ASD_ELIGIBILITY")
    deaths = demo.create(["person.died"]).message.subscription.subscription_id
    cnss = remote.events("CNSS", AMO)
    covered = cnss.create(["coverage.started"]).message.subscription.subscription_id
    remote.backend.stop()
    death = _death(_uncovered(remote.gateway_data))
    _apply(remote.gateway_data, death)
    (got,) = _until_types(demo, deaths, {str(death["id"])})
    assert got.source == "RNP"
    line = _coverage(_uncovered(remote.backend_data))
    _apply(remote.backend_data, line)  # recorded by CNSS while the gateway cannot reach it
    remote.backend = _start_backend(
        remote.backend_data, remote.pki_dir, tmp_path / "backend.log", remote.backend.target
    )
    assert [e.event_id for e in _until_types(cnss, covered, {str(line["id"])})] == [line["id"]]
