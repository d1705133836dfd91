"""A gateway whose PostgreSQL goes away answers at once UNAVAILABLE AUDIT_UNAVAILABLE,
disclosing nothing, never a reasonless DEADLINE_EXCEEDED; and it serves again within
seconds of the database's return (docs/audit-storage.md, "When the database is down").

The outage is a TCP proxy in the test process between the gateway process and the shared
PostgreSQL server (tests/support/fault_proxy.py): a fake network boundary, never the
server itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import databases, processes, registry_rows
from tests.support.fault_proxy import FaultProxy

PURPOSE = "ASD_ELIGIBILITY"


@dataclass
class Outage:
    gateway: processes.Proc
    proxy: FaultProxy
    hid: str


@pytest.fixture
def outage(registry_dir: Path, pki_dir: Path, tmp_path: Path) -> Iterator[Outage]:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 5")
    with databases.postgres_schema() as url, FaultProxy(*databases.target_of(url)) as proxy:
        env = {
            "JISR_STATE_DIR": str(tmp_path),
            "JISR_DATABASE_URL": databases.through(url, "127.0.0.1", proxy.port),
        }
        args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
        proc = processes.start([*args, "--pki-dir", str(pki_dir)], tmp_path / "gw.log", env=env)
        try:
            yield Outage(proc, proxy, hid)
        finally:
            proxy.restore()
            proc.stop()


def _ask(client: JisrClient, hid: str) -> tuple[str, float]:
    """("OK" or the refusal's reason, seconds taken)."""
    started = time.monotonic()
    try:
        client.verify(PURPOSE, hid, "ASD")
    except JisrError as error:
        return f"{error.code.name} {error.reason}", time.monotonic() - started
    return "OK", time.monotonic() - started


def test_while_postgres_is_down_calls_are_refused_at_once_with_audit_unavailable(
    outage: Outage, pki_dir: Path
) -> None:
    with JisrClient(
        outage.gateway.target, Credentials.from_pki(pki_dir, "DEMO"), timeout=30
    ) as demo:
        assert _ask(demo, outage.hid)[0] == "OK"
        outage.proxy.cut()
        answers = [_ask(demo, outage.hid) for _ in range(12)]
    # The first call may wait for the connection to fail; the rest are refused at once.
    assert {reason for reason, _ in answers} == {"UNAVAILABLE AUDIT_UNAVAILABLE"}
    assert max(seconds for _, seconds in answers[2:]) < 2.0


def test_the_gateway_serves_again_within_seconds_of_postgres_returning(
    outage: Outage, pki_dir: Path
) -> None:
    with JisrClient(
        outage.gateway.target, Credentials.from_pki(pki_dir, "DEMO"), timeout=30
    ) as demo:
        assert _ask(demo, outage.hid)[0] == "OK"
        outage.proxy.cut()
        assert _ask(demo, outage.hid)[0] == "UNAVAILABLE AUDIT_UNAVAILABLE"
        outage.proxy.restore()
        back = time.monotonic()
        while _ask(demo, outage.hid)[0] != "OK":
            assert time.monotonic() - back < 10, "not serving 10 s after PostgreSQL returned"
            time.sleep(0.1)
