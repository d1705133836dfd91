"""A ministry backend that fails, hangs or flaps, behind a real gateway process
(adapters/resilience.py, docs/deployment.md "Remote backends"): the calls that need it
fail within their deadline with a stable reason and a RetryInfo, the calls that do not
are served, and it is used again as soon as it answers, without a restart. The backend is
crafted in this process: a fake at a boundary Jisr does not own (the ministry's system)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.server import server_credentials
from tests.support import databases, processes, registry_rows
from tests.support.fake_backend import RecordsOnlyBackend

pytestmark = pytest.mark.integration
PURPOSE = "AMO_ENROLMENT"
WAIT_S = 60.0


class FlakyCnss(RecordsOnlyBackend):
    """CNSS as a test steers it: `healthy` (no coverage for anyone), `failing`
    (UNAVAILABLE), `hanging` (until the caller gives up) or `fail_once` (the first
    attempt of every fetch fails, its retry succeeds)."""

    def __init__(self) -> None:
        self.mode = "healthy"
        self.attempts = 0
        self.hanging = 0  # fetches held right now or before
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()

    def FetchRecords(  # noqa: N802 (gRPC method name)
        self, request: backend_pb2.FetchRecordsRequest, context: grpc.ServicerContext
    ) -> backend_pb2.FetchRecordsResponse:
        with self._lock:
            self.attempts += 1
            first = request.SerializeToString() not in self._seen
            self._seen.add(request.SerializeToString())
        if self.mode == "failing" or (self.mode == "fail_once" and first):
            context.abort(grpc.StatusCode.UNAVAILABLE, "CNSS is down")
        if self.mode == "hanging":
            ended = threading.Event()
            context.add_callback(ended.set)
            with self._lock:
                self.hanging += 1
            ended.wait(60)
        return backend_pb2.FetchRecordsResponse()


@dataclass
class Site:
    cnss: FlakyCnss
    gateway: processes.Proc
    demo: Credentials
    household: str

    def client(self, timeout: float = 30) -> JisrClient:
        return JisrClient(self.gateway.target, self.demo, timeout=timeout)


@pytest.fixture(params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Site]:
    cnss = FlakyCnss()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    backend_pb2_grpc.add_MinistryBackendServicer_to_server(cnss, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(pki_dir))
    server.start()
    config = tmp_path / "jisr.toml"
    config.write_text(
        '[server]\nworkers = 4\n\n[institutions.CNSS]\ntransport = "remote"\n'
        f'target = "127.0.0.1:{port}"\ntimeout_ms = 20000\nmax_in_flight = 2\n',
        encoding="utf-8",
    )
    with ExitStack() as stack:
        stack.callback(lambda: server.stop(None).wait())
        gateway, _ = stack.enter_context(
            databases.gateway_on(
                request.param, registry_dir, pki_dir, tmp_path, "--config", str(config)
            )
        )
        household = registry_rows.households(registry_dir, 1)[0].household_id
        yield Site(cnss, gateway, Credentials.from_pki(pki_dir, "DEMO"), household)


def _amot(client: JisrClient, site: Site) -> str:
    """ "OK" or the refusal's reason, for a call that needs CNSS."""
    try:
        client.verify(PURPOSE, site.household, "AMOT")
    except JisrError as error:
        return error.reason
    return "OK"


def test_a_backend_that_keeps_failing_is_refused_at_once_with_when_to_retry(site: Site) -> None:
    site.cnss.mode = "failing"
    with site.client() as client:
        reasons = [_amot(client, site) for _ in range(6)]
        assert set(reasons) == {"BACKEND_UNAVAILABLE"}
        asked = site.cnss.attempts
        with pytest.raises(JisrError) as refused:
            client.verify(PURPOSE, site.household, "AMOT")
        # The circuit is open: the backend was not asked again, and the caller is told when.
        assert site.cnss.attempts == asked
        assert refused.value.reason == "BACKEND_UNAVAILABLE"
        assert refused.value.metadata == {"institution": "CNSS"}
        assert refused.value.retry_after is not None
        assert refused.value.retry_after > 0
        # A programme that does not need CNSS is decided meanwhile.
        assert client.verify(PURPOSE, site.household, "ASD").message.decision.programme == "ASD"


def test_a_backend_that_answers_again_is_used_again_without_a_restart(site: Site) -> None:
    site.cnss.mode = "failing"
    with site.client() as client:
        for _ in range(6):
            _amot(client, site)
        site.cnss.mode = "healthy"
        deadline = time.monotonic() + WAIT_S
        while _amot(client, site) != "OK":
            assert time.monotonic() < deadline, "CNSS not used again"
            time.sleep(0.5)


def test_a_fetch_refused_once_is_retried_by_the_gateway(site: Site) -> None:
    site.cnss.mode = "fail_once"
    with site.client() as client:
        assert _amot(client, site) == "OK"
    assert site.cnss.attempts >= 2


def test_a_hung_backend_holds_only_its_bulkhead_and_other_calls_are_served(site: Site) -> None:
    site.cnss.mode = "hanging"
    outcomes: list[str] = []

    def needs_cnss() -> None:
        with site.client(timeout=40) as client:
            outcomes.append(_amot(client, site))

    hung = [threading.Thread(target=needs_cnss) for _ in range(6)]
    for thread in hung:
        thread.start()
    try:
        # 2 fetches hang (the bulkhead), the 4 others are refused at once (without it,
        # every worker the institution may hold would hang the backend's 20 s); meanwhile
        # a call that does not need CNSS is served well within its time.
        deadline = time.monotonic() + 15
        while site.cnss.hanging < 2 or len(outcomes) < 4:
            assert time.monotonic() < deadline, f"held: {site.cnss.hanging}, {outcomes}"
            time.sleep(0.1)
        assert outcomes.count("BACKEND_UNAVAILABLE") == 4
        with site.client(timeout=10) as client:
            answer = client.verify(PURPOSE, site.household, "ASD")
        assert answer.message.decision.programme == "ASD"
    finally:
        site.cnss.mode = "healthy"
        for thread in hung:
            thread.join(60)
    # The two held fetches end at CNSS's own deadline (20 s), with its reason, not a hang.
    assert sorted(outcomes[4:]) == ["BACKEND_TIMEOUT", "BACKEND_TIMEOUT"]
