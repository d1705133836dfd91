"""The deployment files (deploy/, docs/deployment.md) are what they claim: the container
image runs as a non-root user under an init, bakes in no secret and is probed with
`jisr health`; the compose file wires the gateway to PostgreSQL, the OpenTelemetry
collector and Prometheus with variables Jisr reads; the configuration they ship loads;
the systemd unit is one systemd accepts. Nothing is built: CI has no registry to pull from."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from gateway.config import _ENV, load

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _final_stage() -> list[str]:
    lines = _dockerfile()
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def test_the_shipped_configuration_loads_and_serves_probes_and_metrics() -> None:
    config = load(DEPLOY / "jisr.toml", {})
    assert config.listen == "0.0.0.0:50051"
    assert config.health_listen == "0.0.0.0:8071"
    assert config.metrics_listen == "0.0.0.0:9464"
    assert config.processes is None  # auto: the CPUs of the container's quota


def test_the_image_runs_as_a_non_root_user_under_an_init() -> None:
    stage = _final_stage()
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    (entrypoint,) = [line for line in stage if line.startswith("ENTRYPOINT ")]
    assert '"tini", "--"' in entrypoint


def test_the_image_bakes_in_no_secret() -> None:
    copied = " ".join(line for line in _dockerfile() if line.startswith(("COPY ", "ADD ")))
    assert not re.search(r"\bvar\b|pki|\.key\b|secret|\.env\b", copied)
    for line in _dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, not in the repo"


def test_the_image_is_probed_with_jisr_health_on_the_configured_port() -> None:
    (check,) = [line for line in _final_stage() if line.startswith("HEALTHCHECK ")]
    assert '"jisr", "health", "--address", "127.0.0.1:8071"' in check
    exposed = {p for line in _final_stage() if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert {"50051", "8071", "9464"} <= exposed


def test_compose_gives_the_gateway_only_variables_jisr_or_opentelemetry_reads(
    compose: dict[str, Any],
) -> None:
    known = set(_ENV) | {"JISR_CONFIG"}
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("JISR_"):
                assert variable in known, f"{name}: {variable} is not a Jisr variable"


def test_compose_wires_the_gateway_to_its_neighbours(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = services["gateway"]
    env = gateway["environment"]
    assert "@postgres:" in env["JISR_DATABASE_URL"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert {"postgres", "otel-collector", "init"} <= set(gateway["depends_on"])
    assert gateway["healthcheck"]["test"][:3] == ["CMD", "jisr", "health"]
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    jaeger_host = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in services
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    processes = int(env["JISR_PROCESSES"])
    assert targets == [f"gateway:{9464 + i}" for i in range(processes)]


def test_compose_publishes_ports_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_mounts_files_that_exist_and_volumes_it_declares(
    compose: dict[str, Any],
) -> None:
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} mounts the undeclared volume {source}"


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "jisr.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_the_systemd_unit_runs_jisr_serve_as_its_own_user_and_drains_on_stop() -> None:
    unit = _unit()
    assert unit["ExecStart"] == ["/opt/jisr/bin/jisr serve"]
    assert unit["User"] == ["jisr"]
    assert unit["KillSignal"] == ["SIGTERM"]
    grace = load(DEPLOY / "jisr.toml", {}).grace_s
    assert float(unit["TimeoutStopSec"][0]) > grace
    assert "JISR_CONFIG=/etc/jisr/jisr.toml" in unit["Environment"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # The binaries it names exist only where Jisr is installed: verify the rest.
    text = (DEPLOY / "jisr.service").read_text().replace("/opt/jisr/bin/jisr serve", "/bin/true")
    unit = tmp_path / "jisr.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert not re.search(r"Unknown|Invalid|Failed to parse", done.stderr), done.stderr
