"""An institution's daily quota from the policy ([limits.X] calls_per_day, docs/policy.md)
holds across the processes of one gateway: counted from the audit trail they all write, on
SQLite and PostgreSQL. Over it: RESOURCE_EXHAUSTED QUOTA_EXCEEDED, told when the day ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.security.policy import DEFAULT_FILE
from tests.support import databases, processes, registry_rows

pytestmark = pytest.mark.integration
SHIPPED = Path(__file__).resolve().parents[2] / "gateway" / "data" / DEFAULT_FILE
PURPOSE = "AMO_ENROLMENT"
QUOTA = 4
WAIT_S = 60.0


@dataclass
class Pool:
    proc: processes.Proc
    pki_dir: Path
    household: str

    def call(self, institution: str = "DEMO") -> str:
        """ "OK" or the refusal's reason, on a new connection (any of the processes)."""
        creds = Credentials.from_pki(self.pki_dir, institution)
        with JisrClient(self.proc.target, creds, timeout=30) as client:
            try:
                client.household_status(PURPOSE, self.household)
            except JisrError as refused:
                self.last = refused
                return refused.reason
        return "OK"

    last: JisrError | None = None


@pytest.fixture(params=["sqlite", "postgresql"])
def pool(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Pool]:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        SHIPPED.read_text(encoding="utf-8") + f"\n[limits.DEMO]\ncalls_per_day = {QUOTA}\n",
        encoding="utf-8",
    )
    env = {
        "JISR_POLICY": str(policy),
        "JISR_PROCESSES": "2",
    }
    with databases.gateway_on(request.param, registry_dir, pki_dir, tmp_path, env=env) as (
        proc,
        _,
    ):
        household = registry_rows.households(registry_dir, 1)[0].household_id
        yield Pool(proc, pki_dir, household)


def test_the_quota_holds_across_the_gateways_processes(pool: Pool) -> None:
    assert [pool.call() for _ in range(QUOTA)] == ["OK"] * QUOTA
    # Each process sees the others' calls at its next reading of the trail (every 5 s):
    # wait until calls on 8 new connections in a row (both processes, almost surely) are
    # refused.
    deadline, refused_in_a_row = time.monotonic() + WAIT_S, 0
    while refused_in_a_row < 8:
        assert time.monotonic() < deadline, "the quota never held on every process"
        if pool.call() == "QUOTA_EXCEEDED":
            refused_in_a_row += 1
        else:
            refused_in_a_row = 0
            time.sleep(0.5)
    assert pool.last is not None
    assert pool.last.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert pool.last.retry_after is not None
    assert 0 < pool.last.retry_after <= 86_400


def test_another_institution_has_its_own_day(pool: Pool) -> None:
    for _ in range(QUOTA):
        pool.call()
    # CNSS has no quota (its answer is whatever its grants say, never the quota's).
    assert "QUOTA_EXCEEDED" not in [pool.call("CNSS") for _ in range(QUOTA + 2)]
