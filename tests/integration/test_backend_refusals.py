"""A ministry's MinistryBackend (`jisr backend serve`, its own process) refuses what the
contract forbids: callers other than the gateway, kinds it does not hold, too many keys;
a registry it cannot read is UNAVAILABLE, never an empty answer."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from adapters.base import MAX_KEYS_PER_FETCH
from adapters.demo_data import generate
from gateway.base.wire import GATEWAY_CLIENT
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1.backend_pb2 import RecordKind
from gateway.sdk.client import Credentials
from tests.support import identities, processes

PERSON = RecordKind.RECORD_KIND_PERSON
COVERAGE = RecordKind.RECORD_KIND_COVERAGE
ENROLMENT = RecordKind.RECORD_KIND_ENROLMENT


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small registry whose CNSS table is gone (a ministry database that broke)."""
    data_dir = tmp_path_factory.mktemp("broken-registry")
    generate(data_dir, 20, 3)
    with sqlite3.connect(data_dir / "registry.sqlite") as db:
        db.execute("DROP TABLE coverage")
    return data_dir


@pytest.fixture(scope="module")
def backend(
    registry: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    """RNP and CNSS served by a MinistryBackend process, mTLS."""
    args = ["backend", "serve", "--institutions", "rnp, CNSS", "--listen", "127.0.0.1:0"]
    args += ["--data-dir", str(registry), "--pki-dir", str(pki_dir)]
    proc = processes.start(args, tmp_path_factory.mktemp("backend-log") / "backend.log")
    yield proc
    proc.stop()


def fetch(
    backend: processes.Proc,
    pki_dir: Path,
    kind: RecordKind.ValueType,
    keys: list[str],
    as_institution: str = GATEWAY_CLIENT,
) -> backend_pb2.FetchRecordsResponse:
    creds = Credentials.from_pki(pki_dir, as_institution)
    with identities.channel(backend.target, creds) as channel:
        stub = backend_pb2_grpc.MinistryBackendStub(channel)
        request = backend_pb2.FetchRecordsRequest(kind=kind, keys=keys, purpose="AMO_ENROLMENT")
        response: backend_pb2.FetchRecordsResponse = stub.FetchRecords(request, timeout=30)
        return response


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    failed = cast(grpc.Call, err.value)
    return failed.code(), str(failed.details())


def a_person(registry: Path) -> str:
    with sqlite3.connect(registry / "registry.sqlite") as db:
        return str(db.execute("SELECT idcs FROM person ORDER BY idcs LIMIT 1").fetchone()[0])


def test_the_gateway_gets_the_records_it_asks_for(
    backend: processes.Proc, pki_dir: Path, registry: Path
) -> None:
    idcs = a_person(registry)
    response = fetch(backend, pki_dir, PERSON, [idcs, "000000000000"])
    assert [r.person.idcs for r in response.records] == [idcs]


def test_no_keys_get_no_records(backend: processes.Proc, pki_dir: Path) -> None:
    assert list(fetch(backend, pki_dir, PERSON, []).records) == []


def test_an_institution_other_than_the_gateway_is_refused(
    backend: processes.Proc, pki_dir: Path, registry: Path
) -> None:
    idcs = a_person(registry)
    assert refusal(lambda: fetch(backend, pki_dir, PERSON, [idcs], as_institution="CNSS")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "only the gateway may call",
    )


def test_a_kind_the_backend_does_not_hold_is_unimplemented(
    backend: processes.Proc, pki_dir: Path
) -> None:
    assert refusal(lambda: fetch(backend, pki_dir, ENROLMENT, ["H1"])) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "this backend holds no RECORD_KIND_ENROLMENT records",
    )


def test_more_keys_than_the_contract_allows_are_invalid(
    backend: processes.Proc, pki_dir: Path
) -> None:
    keys = [f"{i:012d}" for i in range(MAX_KEYS_PER_FETCH + 1)]
    assert refusal(lambda: fetch(backend, pki_dir, PERSON, keys)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"at most {MAX_KEYS_PER_FETCH} keys per call",
    )


def test_a_registry_that_cannot_be_read_is_unavailable(
    backend: processes.Proc, pki_dir: Path, registry: Path
) -> None:
    assert refusal(lambda: fetch(backend, pki_dir, COVERAGE, [a_person(registry)])) == (
        grpc.StatusCode.UNAVAILABLE,
        "CNSS: registry read failed: no such table: coverage",
    )
