"""Institutions reached remotely: a MinistryBackend in its own process behind the gateway."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.client import Credentials, JisrClient, JisrError
from tests.support import processes, registry_rows

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
