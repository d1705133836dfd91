"""The partner SDK stays apart from the server (issue 13, point 7).

A partner installs `jisr` without the `server` extra and imports `gateway.sdk`; that must
load none of the server's modules or dependencies. Each check runs in a fresh interpreter,
since this test process has long since imported the server. The SDK-only install is
simulated here, without a second virtualenv: the subprocess refuses to import any package
of the `server` extra, as it would be absent (`make lowest` installs for real).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gateway.cli import main as cli
from gateway.sdk import propagation
from gateway.security import pki

ROOT = Path(__file__).resolve().parents[2]

# Modules `import gateway.sdk` must not load: the server and the code behind it, its
# telemetry, stores and configuration, and the `server` extra's packages. grpcio itself
# imports the bare `grpc_health` and `grpc_reflection` packages when they are installed
# (empty namespaces), so their service modules are what is named here.
FORBIDDEN = (
    "gateway.server",
    "gateway.services",
    "gateway.engine",
    "gateway.pipeline",
    "gateway.audit",
    "gateway.telemetry",
    "gateway.storage",
    "gateway.config",
    "gateway.cli",
    "adapters",
    "consent.store",
    "consent.store_postgres",
    "consent.store_sqlite",
    "consent.checker",
    "opentelemetry",
    "prometheus_client",
    "psycopg",
    "psycopg_pool",
    "grpc_health.v1",
    "grpc_reflection.v1alpha",
)

# Run in the subprocess before anything else: the `server` extra is not installed.
BLOCK_SERVER_EXTRA = f"""
import importlib.abc, sys
BLOCKED = {cli.SERVER_EXTRA!r}
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _forbidden(loaded: list[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN))


@pytest.mark.parametrize("module", ["gateway.sdk", "gateway.sdk.client", "gateway.sdk.signing"])
def test_the_sdk_loads_none_of_the_servers_modules(module: str) -> None:
    done = _python(f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    assert _forbidden(json.loads(done.stdout)) == []


def test_the_sdk_and_the_partners_commands_work_without_the_server_extra(
    tmp_path: Path,
) -> None:
    """`import gateway.sdk`, then `jisr keys export`, `jisr call` (to a closed port: the
    command runs up to its call) and `jisr serve`, which names the extra to install."""
    pki.init(tmp_path)
    pki.issue(tmp_path, "CNSS")
    run_cli = BLOCK_SERVER_EXTRA + (
        "import gateway.sdk\nfrom gateway.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    )
    keys = _python(run_cli, "keys", "--dir", str(tmp_path), "export")
    assert keys.returncode == 0, keys.stderr
    assert json.loads(keys.stdout)["keys"]
    call = _python(
        run_cli,
        *("call", "--pki-dir", str(tmp_path), "--institution", "CNSS"),
        *("--target", "127.0.0.1:1", "--timeout", "5", "--purpose", "AMO_ENROLMENT"),
        *("person", "1234567890"),
    )
    assert (call.returncode, call.stderr.split(":")[0]) == (1, "jisr call"), call.stderr
    assert "UNAVAILABLE" in call.stderr
    serve = _python(run_cli, "serve", "--pki-dir", str(tmp_path))
    assert serve.returncode == 2
    [line] = serve.stderr.splitlines()
    assert line.startswith("jisr serve: the server's dependencies are not installed")
    assert line.endswith(f"; install them with: {cli.SERVER_EXTRA_PIP}")


def test_the_cli_blocks_exactly_the_server_extras_packages() -> None:
    """SERVER_EXTRA (what the CLI and the test above treat as the extra) is the set of
    top-level packages the `server` extra's distributions install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [req.split("[")[0].split(">")[0] for req in project["optional-dependencies"]["server"]]
    tops: set[str] = set()
    for name in names:
        files = metadata.distribution(name).files or []
        tops |= {f.parts[0] for f in files if f.suffix == ".py" and len(f.parts) > 1}
    # tzdata is data that zoneinfo reads, never imported: nothing to block.
    assert tops - {"tzdata"} == set(cli.SERVER_EXTRA)


def test_every_usage_error_the_cli_catches_exists() -> None:
    """main() looks these up by name in sys.modules; a renamed one must fail here."""
    for module, name in cli.USAGE_ERRORS:
        __import__(module)
        assert issubclass(getattr(sys.modules[module], name), Exception)


def test_the_callers_span_is_sent_on_without_its_baggage() -> None:
    """Without OpenTelemetry the SDK sends nothing; with a current span, its context only
    (a partner's baggage is its own business, not the gateway's)."""
    assert propagation.outgoing() == []
    span = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(span))
    token = otel_context.attach(baggage.set_baggage("idcs", "1234567890", ctx))
    try:
        sent = dict(propagation.outgoing())
    finally:
        otel_context.detach(token)
    assert sent == {"traceparent": f"00-{0x1234:032x}-{0x5678:016x}-01"}
