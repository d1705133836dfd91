"""An institution's rate of calls from the policy ([limits.X], docs/policy.md): over it,
RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo, at once and before any work; after the
delay it says, the call is admitted; another institution is untouched. SQLite and
PostgreSQL stores alike (the door refuses before the stores are asked)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
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


@dataclass
class Limited:
    proc: processes.Proc
    pki_dir: Path
    household: str
    metrics: str  # host:port of its Prometheus /metrics

    def client(self, institution: str) -> JisrClient:
        return JisrClient(self.proc.target, Credentials.from_pki(self.pki_dir, institution))


@pytest.fixture(params=["sqlite", "postgresql"])
def limited(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Limited]:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        SHIPPED.read_text(encoding="utf-8")
        + "\n[limits.DEMO]\ncalls_per_second = 0.5\nburst = 2\n",
        encoding="utf-8",
    )
    metrics = f"127.0.0.1:{processes.free_port()}"
    env = {"JISR_POLICY": str(policy), "JISR_METRICS_LISTEN": metrics}
    with databases.gateway_on(request.param, registry_dir, pki_dir, tmp_path, env=env) as (
        proc,
        _,
    ):
        household = registry_rows.households(registry_dir, 1)[0].household_id
        yield Limited(proc, pki_dir, household, metrics)


def test_a_refused_call_is_counted_with_its_status_code(limited: Limited) -> None:
    refused = 0
    with limited.client("DEMO") as demo:
        for _ in range(10):  # until the burst is spent, however slow the machine
            try:
                demo.household_status(PURPOSE, limited.household)
            except JisrError:
                refused += 1
                break
    assert refused == 1
    with urllib.request.urlopen(f"http://{limited.metrics}/metrics", timeout=10) as response:
        lines = [ln for ln in response.read().decode().splitlines() if 'requester="DEMO"' in ln]
    code = 'rpc_grpc_status_code="8"'  # RESOURCE_EXHAUSTED
    counted = [ln for ln in lines if ln.startswith("jisr_exchange_requests_total{") and code in ln]
    assert [float(line.rsplit(" ", 1)[1]) for line in counted] == [1.0]
    # Counted, but no duration: a flood's refusals would pull the percentiles down.
    assert not [ln for ln in lines if ln.startswith("jisr_exchange_duration") and code in ln]


def test_calls_beyond_the_burst_are_refused_with_when_to_retry(limited: Limited) -> None:
    with limited.client("DEMO") as demo:
        demo.household_status(PURPOSE, limited.household)
        demo.household_status(PURPOSE, limited.household)
        with pytest.raises(JisrError) as refused:
            demo.household_status(PURPOSE, limited.household)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= 2.0


def test_a_call_after_the_delay_it_was_told_is_admitted(limited: Limited) -> None:
    with limited.client("DEMO") as demo:
        demo.household_status(PURPOSE, limited.household)
        demo.household_status(PURPOSE, limited.household)
        with pytest.raises(JisrError) as refused:
            demo.household_status(PURPOSE, limited.household)
        assert refused.value.retry_after is not None
        time.sleep(refused.value.retry_after + 0.05)
        assert demo.household_status(PURPOSE, limited.household).message.household


def test_another_institution_is_not_held_by_a_limited_one(limited: Limited) -> None:
    with limited.client("DEMO") as demo, limited.client("CNSS") as cnss:
        for _ in range(4):
            with suppress(JisrError):
                demo.household_status(PURPOSE, limited.household)
        answers = [cnss.verify(PURPOSE, limited.household, "AMOT") for _ in range(5)]
    assert len(answers) == 5
