"""Institutions reached remotely: a MinistryBackend in its own process behind the gateway,
and one that lies or stalls (crafted in this process) behind a real gateway process."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date

from adapters.record_checks import MAX_HOUSEHOLD_MEMBERS, MAX_SCORE, MIN_SCORE
from gateway.base.identifiers import make_idcs
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pb.jisr.v1.backend_pb2 import Record
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.server import server_credentials
from tests.support import databases, processes, registry_rows
from tests.support.fake_backend import RecordsOnlyBackend

PURPOSE = "AMO_ENROLMENT"


@pytest.fixture(scope="module")
def remote_backend(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    """CNSS and ANSS served by a MinistryBackend process (the ministries' side)."""
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    proc = processes.start(
        [
            "backend",
            "serve",
            "--institutions",
            "CNSS,ANSS",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(registry_dir),
            "--pki-dir",
            str(pki_dir),
        ],
        log,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def remote_gateway(
    registry_dir: Path,
    pki_dir: Path,
    remote_backend: processes.Proc,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[processes.Proc]:
    """A gateway whose config sends CNSS and ANSS lookups to the backend process."""
    folder = tmp_path_factory.mktemp("remote-gateway")
    config = folder / "jisr.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:0"

[data]
dir = "{registry_dir}"

[security]
pki_dir = "{pki_dir}"

[institutions.CNSS]
transport = "remote"
target = "{remote_backend.target}"
timeout_ms = 5000

[institutions.ANSS]
transport = "remote"
target = "{remote_backend.target}"
"""
    )
    proc = processes.start(["serve", "--config", str(config)], folder / "gateway.log")
    yield proc
    proc.stop()


def _covered_households(registry_dir: Path, limit: int) -> list[str]:
    with registry_rows.connect(registry_dir) as db:
        rows = db.execute(
            "SELECT DISTINCT m.household_id FROM membership m JOIN coverage c USING (idcs)"
            " ORDER BY 1 LIMIT ?",
            (limit,),
        ).fetchall()
    return [r[0] for r in rows]


def test_remote_coverage_decides_like_embedded_coverage(
    remote_gateway: processes.Proc,
    gateway: processes.Proc,
    registry_dir: Path,
    demo: Credentials,
) -> None:
    subjects = _covered_households(registry_dir, 200)
    subjects += [h.household_id for h in registry_rows.households(registry_dir, 200)]
    with (
        JisrClient(remote_gateway.target, demo, timeout=30) as remote,
        JisrClient(gateway.target, demo, timeout=30) as embedded,
    ):
        for hid in subjects:
            by_remote = remote.verify(PURPOSE, hid, "AMOT").message
            assert by_remote == embedded.verify(PURPOSE, hid, "AMOT").message


def test_remote_enrolments_appear_in_household_status(
    remote_gateway: processes.Proc, registry_dir: Path, demo: Credentials
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM enrolment LIMIT 1")
    with JisrClient(remote_gateway.target, demo) as client:
        household = client.household_status(PURPOSE, hid).message.household
    assert [e.programme for e in household.enrolments] == ["ASD"]


def test_backend_down_gives_unavailable_naming_the_institution(
    registry_dir: Path, pki_dir: Path, demo: Credentials, tmp_path: Path
) -> None:
    backend = processes.start(
        [
            "backend",
            "serve",
            "--institutions",
            "CNSS",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(registry_dir),
            "--pki-dir",
            str(pki_dir),
        ],
        tmp_path / "backend.log",
    )
    gateway = processes.start(
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(registry_dir),
            "--pki-dir",
            str(pki_dir),
        ],
        tmp_path / "gateway.log",
        env={"JISR_REMOTE_CNSS": backend.target},
    )
    try:
        hid = _covered_households(registry_dir, 1)[0]
        with JisrClient(gateway.target, demo, timeout=30) as client:
            assert client.verify(PURPOSE, hid, "AMOT").message.decision.programme == "AMOT"
            backend.stop(signal.SIGKILL)
            with pytest.raises(JisrError) as err:
                client.verify(PURPOSE, hid, "AMOT")
            # Programmes that do not need CNSS keep working.
            assert client.verify(PURPOSE, hid, "ASD").message.decision.programme == "ASD"
    finally:
        gateway.stop()
        backend.stop()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "BACKEND_UNAVAILABLE"
    assert err.value.metadata == {"institution": "CNSS"}


# -- a backend that answers outside the contract, or too late ------------------------------

LIAR_SUBJECT = "H000000042"  # a household only the lying RSU "knows"
Answer = Callable[[backend_pb2.FetchRecordsRequest, grpc.ServicerContext], list[Record]]


def _household(household_id: str, **changes: Any) -> rec.HouseholdRecord:
    """A household within the contract, then `changes`: one thing broken per test."""
    record = rec.HouseholdRecord(
        household_id=household_id,
        region=rec.REGION_DRAA_TAFILALET,
        area=rec.AREA_RURAL,
        score=9.0,
        registered_on=Date(year=2024, month=3, day=1),
        scored_on=Date(year=2024, month=3, day=15),
    )
    record.members.add(idcs=make_idcs("400000001"), relationship=rec.RELATIONSHIP_DECLARANT)
    record.members.add(idcs=make_idcs("400000002"), relationship=rec.RELATIONSHIP_CHILD)
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def _asked_households(**changes: Any) -> Answer:
    """An answer: a household for every key asked, each with `changes`."""

    def answer(
        request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> list[Record]:
        return [Record(household=_household(key, **changes)) for key in request.keys]

    return answer


class LyingBackend(RecordsOnlyBackend):
    """The RSU's MinistryBackend as a test crafts it: whatever `answer` returns.

    A fake at a boundary Jisr does not own (the ministry's own system) — the only way to
    make a backend lie on purpose. Everything on Jisr's side is real: a gateway process
    reaches it over mutual TLS with its own client certificate."""

    def __init__(self) -> None:
        self.answer: Answer = _asked_households()

    def FetchRecords(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.FetchRecordsResponse:
        return backend_pb2.FetchRecordsResponse(records=self.answer(request, context))


@pytest.fixture(scope="module")
def lying_backend(pki_dir: Path) -> Iterator[tuple[LyingBackend, int]]:
    servicer = LyingBackend()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    backend_pb2_grpc.add_MinistryBackendServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(pki_dir))
    server.start()
    yield servicer, port
    server.stop(None).wait()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def liar(
    request: pytest.FixtureRequest,
    lying_backend: tuple[LyingBackend, int],
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LyingBackend, processes.Proc]]:
    """A gateway whose RSU is the lying backend (5 s timeout); the rest embedded; its
    stores (the refusals' records) on SQLite or PostgreSQL."""
    servicer, port = lying_backend
    folder = tmp_path_factory.mktemp("lying-gateway")
    config = folder / "jisr.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:0"

[data]
dir = "{registry_dir}"

[security]
pki_dir = "{pki_dir}"

[institutions.RSU]
transport = "remote"
target = "127.0.0.1:{port}"
timeout_ms = 5000
"""
    )
    with databases.for_backend(str(request.param)) as url:
        env = {"JISR_DATABASE_URL": url} if url else {}
        proc = processes.start(["serve", "--config", str(config)], folder / "gateway.log", env=env)
        yield servicer, proc
        proc.stop()
    servicer.answer = _asked_households()


def _refused_as_backend_invalid(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials, answer: Answer
) -> JisrError:
    servicer, gateway = liar
    servicer.answer = answer
    with JisrClient(gateway.target, demo, timeout=30) as client, pytest.raises(JisrError) as err:
        client.verify(PURPOSE, LIAR_SUBJECT, "ASD")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "BACKEND_INVALID"
    assert err.value.metadata == {"institution": "RSU"}
    return err.value


def test_a_lying_backends_answer_within_the_contract_is_decided(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    """The control: the refusals below come from what each breaks, not from the setup."""
    servicer, gateway = liar
    servicer.answer = _asked_households()
    with JisrClient(gateway.target, demo, timeout=30) as client:
        decision = client.verify(PURPOSE, LIAR_SUBJECT, "ASD").message.decision
    assert decision.eligible
    assert decision.threshold_version == "ASD-2023"


@pytest.mark.parametrize("score", [-math.inf, math.inf, math.nan])
def test_a_non_finite_score_is_backend_invalid_not_a_decision(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials, score: float
) -> None:
    _refused_as_backend_invalid(liar, demo, _asked_households(score=score))


@pytest.mark.parametrize("score", [MIN_SCORE - 1, MAX_SCORE + 1])
def test_a_score_outside_its_documented_range_is_backend_invalid(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials, score: float
) -> None:
    _refused_as_backend_invalid(liar, demo, _asked_households(score=score))


def test_an_enum_value_the_contract_does_not_define_is_backend_invalid(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    _refused_as_backend_invalid(liar, demo, _asked_households(region=99))


def test_a_record_for_a_key_not_asked_for_is_backend_invalid(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    def another_household(
        request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> list[Record]:
        return [Record(household=_household("H000000043"))]

    _refused_as_backend_invalid(liar, demo, another_household)


def test_a_malformed_key_is_backend_invalid_and_never_quoted(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    good = make_idcs("400000003")
    bad = good[:9] + str((int(good[9]) + 1) % 10)  # a wrong check digit

    def bad_member(
        request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> list[Record]:
        record = _household(request.keys[0])
        record.members.add(idcs=bad, relationship=rec.RELATIONSHIP_CHILD)
        return [Record(household=record)]

    error = _refused_as_backend_invalid(liar, demo, bad_member)
    _, gateway = liar
    assert bad not in error.message
    assert LIAR_SUBJECT not in error.message
    log = gateway.output()
    assert "household.members.idcs" in log  # the operator learns the field
    assert bad not in log


def test_an_oversized_household_is_backend_invalid(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    def oversized(
        request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> list[Record]:
        record = _household(request.keys[0])
        for n in range(MAX_HOUSEHOLD_MEMBERS):  # the two of _household make it MAX + 2
            record.members.add(
                idcs=make_idcs(f"{500_000_000 + n}"), relationship=rec.RELATIONSHIP_CHILD
            )
        return [Record(household=record)]

    _refused_as_backend_invalid(liar, demo, oversized)


def test_a_caller_deadline_shorter_than_the_backend_timeout_ends_as_backend_timeout(
    liar: tuple[LyingBackend, processes.Proc], demo: Credentials
) -> None:
    """The gateway answers with its own reason and a receipt before the caller's deadline,
    instead of letting the caller's library end the call as a bare DEADLINE_EXCEEDED."""

    def sleeps_until_cancelled(
        request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> list[Record]:
        ended = threading.Event()
        context.add_callback(ended.set)
        ended.wait(30)
        return []

    servicer, gateway = liar
    servicer.answer = sleeps_until_cancelled
    # 2 s for the caller, 5 s configured for the RSU backend.
    with JisrClient(gateway.target, demo, timeout=2.0) as client, pytest.raises(JisrError) as err:
        client.verify(PURPOSE, LIAR_SUBJECT, "ASD")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "BACKEND_TIMEOUT"
    assert err.value.metadata == {"institution": "RSU"}
    assert err.value.receipt is not None
    assert (err.value.receipt["decision"], err.value.receipt["reason"]) == (
        "deny",
        "BACKEND_TIMEOUT",
    )
