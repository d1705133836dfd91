"""Tracing across institutions and telemetry without personal data, seen by a real OTLP
receiver from a real gateway and a real ministry backend, each in its own process."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextvars import Token
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.telemetry import relay
from tests.support import identities, otlp, processes, registry_rows

SERVER = "jisr.v1.RegistryExchange/VerifyEligibility"
FETCH = "jisr.v1.MinistryBackend/FetchRecords"
RELAY = "gateway.telemetry.relay"
GATEWAY = "jisr-gateway-casa"  # OTEL_SERVICE_NAME (the default is jisr-gateway)


@dataclass
class Traced:
    receiver: otlp.Receiver
    gateway: processes.Proc
    backend: processes.Proc
    metrics_port: int


def _argv(command: str, registry_dir: Path, pki_dir: Path) -> list[str]:
    where = ["--data-dir", str(registry_dir), "--pki-dir", str(pki_dir)]
    return [*command.split(), "--listen", "127.0.0.1:0", *where]


@pytest.fixture(scope="module")
def traced(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traced]:
    folder = tmp_path_factory.mktemp("tracing")
    (folder / "state").mkdir()
    receiver = otlp.Receiver()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    backend = processes.start(
        _argv("backend serve --institutions CNSS", registry_dir, pki_dir),
        folder / "backend.log",
        env=env,
    )
    port = processes.free_port()
    gateway = processes.start(
        [*_argv("serve", registry_dir, pki_dir), "--metrics-listen", f"127.0.0.1:{port}"],
        folder / "gateway.log",
        env={
            **env,
            "OTEL_SERVICE_NAME": GATEWAY,
            "JISR_REMOTE_CNSS": backend.target,
            "JISR_STATE_DIR": str(folder / "state"),
        },
    )
    yield Traced(receiver, gateway, backend, port)
    gateway.stop()
    backend.stop()
    receiver.stop()


def _partner_span() -> tuple[Token[Context], SpanContext]:
    """A partner's own span, as its tracing would have started it."""
    parent = SpanContext(
        trace_id=random.getrandbits(128),
        span_id=random.getrandbits(64),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    return token, parent


def test_one_trace_runs_from_the_partner_through_the_gateway_into_the_backend(
    traced: Traced, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(
        registry_dir,
        "SELECT DISTINCT m.household_id FROM membership m JOIN coverage c USING (idcs) LIMIT 1",
    )
    token, parent = _partner_span()
    try:
        with JisrClient(traced.gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
            answer = client.verify("AMO_ENROLMENT", hid, "AMOT")
    finally:
        otel_context.detach(token)
    trace_id = parent.trace_id

    def spans_of(service: str) -> list[Span]:
        return [
            s
            for svc, s in traced.receiver.spans
            if svc == service and int.from_bytes(s.trace_id, "big") == trace_id
        ]

    def arrived() -> bool:
        names = {s.name for s in spans_of(GATEWAY)}
        return bool(spans_of("jisr-ministry-backend")) and SERVER in names

    assert traced.receiver.wait_for(arrived)
    # At the edges only: the call served, and one client span per remote fetch.
    server, client_span = sorted(spans_of(GATEWAY), key=lambda s: s.kind)
    assert (server.name, client_span.name) == (SERVER, FETCH)
    assert int.from_bytes(server.parent_span_id, "big") == parent.span_id
    assert client_span.parent_span_id == server.span_id
    (backend_span,) = spans_of("jisr-ministry-backend")
    assert backend_span.parent_span_id == client_span.span_id
    # The steps inside the call are one attribute of its span, "name 123us ...; ...".
    (steps,) = [a.value.string_value for a in server.attributes if a.key == "jisr.steps"]
    names = {step.split(" ", 1)[0] for step in steps.split("; ")}
    assert {"authenticate", "authorize", "adapter", "receipt", "audit"} <= names
    assert answer.receipt["trace"] == format(trace_id, "032x")


def test_the_audit_record_names_the_trace(
    traced: Traced, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 5")
    creds = Credentials.from_pki(pki_dir, "DEMO")
    with JisrClient(traced.gateway.target, creds) as client:
        trace_hex = client.verify("ASD_ELIGIBILITY", hid, "ASD").receipt["trace"]
        assert trace_hex
        request = apb.QueryAccessRequest(purpose="DATA_PROTECTION_AUDIT", trace_id=trace_hex)
        method = "/jisr.v1.AuditTrail/QueryAccess"
        body = request.SerializeToString()
        signed = creds.signer.request_token(method, "DATA_PROTECTION_AUDIT", body)
        with identities.channel(traced.gateway.target, creds) as channel:
            pages = list(
                channel.unary_stream(method)(
                    body, timeout=30, metadata=(("x-jisr-signature", signed),)
                )
            )
    records = [r for raw in pages for r in apb.QueryAccessResponse.FromString(raw).records]
    assert [r.trace_id for r in records] == [trace_hex]


SWEPT_METHODS = (
    "GetPersonStatus",
    "GetHouseholdStatus",
    "VerifyEligibility",
    "VerifyEligibilityBatch",
)


def test_no_subject_identifier_appears_in_any_span(
    traced: Traced, pki_dir: Path, registry_dir: Path
) -> None:
    rows = registry_rows.households(registry_dir, 5)
    hids = [h.household_id for h in rows]
    idcs = [m for h in rows for m in h.members]
    unknown = "1234567897"
    before = len(traced.receiver.spans)
    with JisrClient(traced.gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
        for hid, person in zip(hids, idcs, strict=False):
            client.person_status("AMO_ENROLMENT", person)
            client.household_status("RECERTIFICATION", hid)
            client.verify("AMO_ENROLMENT", person, "AMOT")
        list(client.verify_batches("RECERTIFICATION", "ASD", [hids + idcs + ["12"]]))
        with pytest.raises(JisrError):
            client.person_status("AMO_ENROLMENT", unknown)
        with pytest.raises(JisrError):
            client.person_status("SCHOOL_SUPPORT", idcs[0])
        with pytest.raises(JisrError):
            client.household_status("AMO_ENROLMENT", "H12")
    methods = {f"jisr.v1.RegistryExchange/{m}" for m in SWEPT_METHODS}

    def swept() -> set[str]:
        return methods & {span.name for _, span in list(traced.receiver.spans)[before:]}

    traced.receiver.wait_for(lambda: swept() == methods, 20)
    time.sleep(1.0)  # the last batches of the span processors
    # The sweep proves nothing unless the spans of these very calls arrived.
    assert swept() == methods
    assert "jisr.batch" in {span.name for _, span in list(traced.receiver.spans)[before:]}
    assert len(traced.receiver.spans) - before >= 16
    secrets_ = {*hids, *idcs, unknown}
    leaks = []
    for service, span in list(traced.receiver.spans):
        texts = [span.name, span.status.message]
        texts += [str(a.value) for a in span.attributes]
        texts += [str(a.value) for e in span.events for a in e.attributes] + [
            e.name for e in span.events
        ]
        leaks += [(service, span.name, s) for s in secrets_ for t in texts if s in t]
        assert not [a.key for a in span.attributes if "score" in a.key]
    assert leaks == []


def test_metrics_reach_otlp_and_prometheus(
    traced: Traced, pki_dir: Path, registry_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with JisrClient(traced.gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
        client.verify("ASD_ELIGIBILITY", hid, "ASD")
    assert traced.receiver.wait_for(
        lambda: {"jisr.exchange.requests", "jisr.adapter.duration"} <= traced.receiver.metric_names
    )
    url = f"http://127.0.0.1:{traced.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert "jisr_exchange_requests" in text
    assert hid not in text


def test_metrics_follow_the_conventions_of_the_spans(
    traced: Traced, pki_dir: Path, registry_dir: Path
) -> None:
    """Durations in seconds, the status code as a label, the method named as the spans
    name it (rpc.service and rpc.method), the service named by OTEL_SERVICE_NAME."""
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with JisrClient(traced.gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
        client.verify("ASD_ELIGIBILITY", hid, "ASD")
        with pytest.raises(JisrError):
            client.verify("NOT_A_PURPOSE", hid, "ASD")
    url = f"http://127.0.0.1:{traced.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets = [ln for ln in text.splitlines() if "jisr_exchange_duration_seconds_bucket" in ln]
    assert any('le="0.05"' in line for line in buckets)  # seconds, not the SDK's ms buckets
    assert 'rpc_service="jisr.v1.RegistryExchange"' in text
    assert 'rpc_method="VerifyEligibility"' in text
    assert 'rpc_grpc_status_code="0"' in text
    assert 'rpc_grpc_status_code="7"' in text  # PERMISSION_DENIED: the purpose not granted
    assert f'service_name="{GATEWAY}"' in text
    assert traced.receiver.wait_for(lambda: GATEWAY in traced.receiver.metric_services)


def _gateway(
    registry_dir: Path, pki_dir: Path, folder: Path, endpoint: str, *, delay_ms: int, via: str = "1"
) -> processes.Proc:
    (folder / "state").mkdir()
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
        "JISR_STATE_DIR": str(folder / "state"),
        "JISR_OTLP_RELAY": via,
    }
    return processes.start(_argv("serve", registry_dir, pki_dir), folder / "gateway.log", env=env)


def _gone(pid: int, seconds: float = 30.0) -> bool:
    """Process `pid` has exited (gone, or a zombie not reaped yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _verify(gateway: processes.Proc, pki_dir: Path, registry_dir: Path) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
        assert client.verify("ASD_ELIGIBILITY", hid, "ASD").receipt["trace"]


def test_calls_succeed_while_the_collector_is_down_and_spans_flow_once_it_is_back(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    port = processes.free_port()  # where a collector was: nothing listens there now
    gateway = _gateway(registry_dir, pki_dir, tmp_path, f"http://127.0.0.1:{port}", delay_ms=100)
    try:
        for _ in range(3):
            _verify(gateway, pki_dir, registry_dir)
            time.sleep(0.2)  # an export of the spans before has been tried, and failed
        back = otlp.Receiver(port)
        try:
            _verify(gateway, pki_dir, registry_dir)
            assert back.wait_for(lambda: any(s.name == SERVER for _, s in back.spans))
        finally:
            back.stop()
    finally:
        gateway.stop()


@pytest.mark.parametrize("via", ["1", "0"], ids=["relay", "in-process"])
def test_a_gateway_stopped_by_sigterm_exports_its_last_spans(
    registry_dir: Path, pki_dir: Path, tmp_path: Path, via: str
) -> None:
    receiver = otlp.Receiver()
    try:
        # Spans wait a minute in the gateway's batch: only the stop can send them.
        gateway = _gateway(
            registry_dir, pki_dir, tmp_path, receiver.endpoint, delay_ms=60_000, via=via
        )
        try:
            children = processes.child_pids(gateway.popen.pid, RELAY)
            assert len(children) == int(via)
            _verify(gateway, pki_dir, registry_dir)
            assert receiver.spans == []
        finally:
            assert gateway.stop() == 0
        assert [span.name for _, span in receiver.spans] == [SERVER]
        assert all(_gone(child) for child in children)
    finally:
        receiver.stop()


def test_the_relay_ends_when_its_gateway_is_killed(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    gateway = _gateway(
        registry_dir, pki_dir, tmp_path, f"http://127.0.0.1:{processes.free_port()}", delay_ms=100
    )
    try:
        (child,) = processes.child_pids(gateway.popen.pid, RELAY)
    finally:
        gateway.stop(signal.SIGKILL)
    assert _gone(child)


def test_a_dead_relay_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = otlp.Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setattr(relay, "RESTART_S", 0.0)
    exporter = relay.RelayExporter(Resource({"service.name": "jisr-gateway-casa"}))
    try:
        deadline = time.monotonic() + 10  # until the child runs the relay's module
        while (
            not (found := processes.child_pids(os.getpid(), RELAY)) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        (first,) = found
        os.kill(first, signal.SIGKILL)
        assert _gone(first)
        span = ReadableSpan("after the restart", SpanContext(1, 2, False), start_time=1, end_time=2)
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        receiver.stop()
    assert [(service, s.name) for service, s in receiver.spans] == [
        ("jisr-gateway-casa", "after the restart")
    ]


def test_the_relays_own_log_lines_are_json(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # What it logs is its exporter failing: nothing listens at the endpoint.
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{processes.free_port()}"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    exporter = relay.RelayExporter(Resource({"service.name": "jisr-gateway-casa"}))
    span = ReadableSpan("unsent", SpanContext(1, 2, False), start_time=1, end_time=2)
    exporter.export([span])
    written, deadline = "", time.monotonic() + 60  # the child runs at nice 10: give it time
    while '"logger": "opentelemetry' not in written and time.monotonic() < deadline:
        time.sleep(0.2)
        written += capfd.readouterr().err
    exporter.shutdown()
    lines = (written + capfd.readouterr().err).splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(entry["logger"].startswith("opentelemetry") for entry in logged)
    # No Python log line in another shape (a C library's own line is not ours to shape).
    assert not [line for line in lines if not line.startswith("{") and "export" in line.lower()]


def test_no_span_or_metric_leaves_when_the_standard_variables_say_none(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    receiver = otlp.Receiver()
    (tmp_path / "state").mkdir()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "JISR_STATE_DIR": str(tmp_path / "state"),
    }
    gateway = processes.start(
        _argv("serve", registry_dir, pki_dir), tmp_path / "gateway.log", env=env
    )
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    try:
        with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
            answer = client.verify("ASD_ELIGIBILITY", hid, "ASD")
            assert answer.message.decision.programme == "ASD"
        time.sleep(1.5)  # several export intervals of either signal
    finally:
        gateway.stop()
        receiver.stop()
    assert (receiver.spans, receiver.metric_names) == ([], set())
