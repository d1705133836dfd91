"""The probes (docs/deployment.md, "Probes"): plaintext /livez and /readyz on their own
address, no client certificate; readiness follows the audit store and the required
backends, and comes back without a restart; `jisr health` turns them into an exit code."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.support import databases, processes
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration
WAIT_S = 60.0


def _gateway(
    registry_dir: Path, pki_dir: Path, folder: Path, env: dict[str, str]
) -> tuple[processes.Proc, str]:
    probes = f"127.0.0.1:{processes.free_port()}"
    proc = processes.serve(registry_dir, pki_dir, folder, "--health-listen", probes, env=env)
    return proc, probes


STORES = ("store:consents", "store:contests", "store:events")


def _ready(probes: str) -> httpx.Response:
    return httpx.get(f"http://{probes}/readyz", timeout=10)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.3)


def _health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.jisr("health", *args), capture_output=True, text=True, timeout=60,
        check=False, env=processes.environment(),
    )  # fmt: skip


@pytest.fixture
def plain(registry_dir: Path, pki_dir: Path, tmp_path: Path) -> Iterator[str]:
    proc, probes = _gateway(registry_dir, pki_dir, tmp_path, {})
    try:
        yield probes
    finally:
        proc.stop()


def test_a_serving_gateway_is_live_and_ready_without_a_client_certificate(plain: str) -> None:
    ready = _ready(plain)
    assert ready.status_code == 200
    stores = dict.fromkeys(STORES, "ok")
    assert ready.json() == {"status": "ok", "checks": {"audit": "ok", "serving": "ok", **stores}}
    live = httpx.get(f"http://{plain}/livez", timeout=10)
    assert live.json() == {"status": "ok", "checks": {"event_loop": "ok"}}


def test_an_unknown_probe_path_is_not_found(plain: str) -> None:
    reply = httpx.get(f"http://{plain}/metrics", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["paths"] == ["/livez", "/readyz"]


def test_jisr_health_exits_0_when_ready(plain: str) -> None:
    done = _health("--address", plain)
    assert done.returncode == 0
    assert "200 ok" in done.stdout


def test_jisr_health_without_an_address_says_how_to_give_one() -> None:
    done = _health()
    assert done.returncode == 2
    assert "--address" in done.stderr


def test_jisr_health_exits_1_when_nothing_answers() -> None:
    done = _health("--address", f"127.0.0.1:{processes.free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert "no answer" in done.stderr


@pytest.mark.parametrize("stores", ["sqlite", "postgresql"])
def test_a_required_backend_down_makes_the_gateway_not_ready_until_it_returns(
    registry_dir: Path, pki_dir: Path, tmp_path: Path, stores: str
) -> None:
    backend_port = processes.free_port()
    config = tmp_path / "jisr.toml"
    config.write_text(
        '[institutions.CNSS]\ntransport = "remote"\n'
        f'target = "127.0.0.1:{backend_port}"\nrequired = true\n',
        encoding="utf-8",
    )
    probes = f"127.0.0.1:{processes.free_port()}"
    stack = ExitStack()
    database = stack.enter_context(databases.for_backend(stores))
    env = {"JISR_DATABASE_URL": database} if database else {}
    proc = processes.serve(
        registry_dir, pki_dir, tmp_path, "--config", str(config), "--health-listen", probes,
        env=env,
    )  # fmt: skip
    stack.callback(proc.stop)
    backend = None
    try:
        refused = _ready(probes)
        assert refused.status_code == 503
        assert refused.json()["checks"]["backend:CNSS"].startswith("health check answered")
        assert _health("--address", probes).returncode == 1
        backend = processes.start(
            ["backend", "serve", "--institutions", "CNSS", "--listen",
             f"127.0.0.1:{backend_port}", "--data-dir", str(registry_dir),
             "--pki-dir", str(pki_dir)],
            tmp_path / "backend.log",
        )  # fmt: skip
        _until(lambda: _ready(probes).status_code == 200, "ready once CNSS serves")
    finally:
        stack.close()  # the gateway stopped, then its schema dropped
        if backend is not None:
            backend.stop()


def test_an_optional_backend_down_is_reported_but_leaves_the_gateway_ready(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    env = {"JISR_REMOTE_CNSS": f"127.0.0.1:{processes.free_port()}"}
    proc, probes = _gateway(registry_dir, pki_dir, tmp_path, env)
    try:
        ready = _ready(probes)
        assert ready.status_code == 200
        assert ready.json()["checks"]["backend:CNSS"] != "ok"
    finally:
        proc.stop()


def test_the_audit_database_out_of_reach_makes_the_gateway_not_ready_until_it_returns(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    with databases.postgres_schema() as url, FaultProxy(*databases.target_of(url)) as proxy:
        env = {"JISR_DATABASE_URL": databases.through(url, "127.0.0.1", proxy.port)}
        proc, probes = _gateway(registry_dir, pki_dir, tmp_path, env)
        try:
            assert _ready(probes).status_code == 200
            proxy.cut()
            _until(lambda: _ready(probes).status_code == 503, "not ready once cut")
            checks = _ready(probes).json()["checks"]
            assert checks["audit"] != "ok"
            # Every store on that database is reported out of reach, each by name.
            assert all(checks[s] != "ok" for s in STORES)
            assert httpx.get(f"http://{probes}/livez", timeout=10).status_code == 200
            proxy.restore()
            _until(lambda: _ready(probes).status_code == 200, "ready once restored")
        finally:
            proxy.restore()
            proc.stop()


def test_a_taken_probe_address_is_refused_naming_it(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            processes.jisr(
                "serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir),
                "--pki-dir", str(pki_dir), "--health-listen", address,
            ),
            capture_output=True, text=True, timeout=120, check=False,
            env=processes.environment({"JISR_STATE_DIR": str(tmp_path / "state")}),
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen for the probes on {address}" in done.stderr
    assert "Traceback" not in done.stderr
