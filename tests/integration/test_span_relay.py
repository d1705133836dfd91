"""The span relay as an operator meets it: a real child process exporting OTLP to a real
receiver, started again when it dies, ending with its gateway however the gateway ends."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from bench.common import child_pids
from gateway.sdk.client import Credentials, JisrClient
from gateway.telemetry import span_relay, tracing
from tests.support import otlp, processes, registry_rows

SERVER = "jisr.v1.RegistryExchange/VerifyEligibility"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[otlp.Receiver]:
    """A collector; the relay children started by a test export to it."""
    collector = otlp.Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    yield collector
    collector.stop()


def _sink(**options: Any) -> span_relay.RelaySink:
    return span_relay.RelaySink(
        Resource.create({"service.name": "jisr-gateway-casa"}),
        InstrumentationScope("jisr"),
        **options,
    )


def _record(sink: span_relay.RelaySink, *names: str) -> None:
    """Spans named `names`, one trace each, handed to `sink` as the gateway would."""
    tracing.install(
        tracing.Pipeline(
            processors=(),
            sampler=ParentBased(ALWAYS_ON),
            ids=RandomIdGenerator(),
            resource=Resource.create({}),
            scope=InstrumentationScope("jisr"),
            sinks=(sink,),
        )
    )
    try:
        for name in names:
            with tracing.server_span(name, []):
                pass
    finally:
        tracing.install(None)


def _names(receiver: otlp.Receiver) -> list[str]:
    return [span.name for _, span in receiver.spans]


def _exited(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_exited(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.05)
    return False


def test_spans_handed_to_the_relay_reach_the_collector_with_their_resource(
    receiver: otlp.Receiver,
) -> None:
    sink = _sink()
    _record(sink, "first", "second")
    sink.shutdown()  # ships the queue; the child exports what it holds, then exits
    assert receiver.wait_for(lambda: len(receiver.spans) == 2)
    assert {service for service, _ in receiver.spans} == {"jisr-gateway-casa"}
    assert sorted(_names(receiver)) == ["first", "second"]


def test_a_dead_relay_is_started_again_and_spans_flow_once_more(
    receiver: otlp.Receiver,
) -> None:
    sink = _sink(restart_s=0)
    try:
        first = sink.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait_exited(first)
        _record(sink, "after-restart")
        sink.flush()
        assert sink.pid not in (None, first)
        assert sink.dropped == 0
    finally:
        sink.shutdown()
    assert receiver.wait_for(lambda: "after-restart" in _names(receiver))


def test_while_the_relay_is_down_spans_are_dropped_and_counted(
    receiver: otlp.Receiver,
) -> None:
    sink = _sink(restart_s=3600)
    try:
        pid = sink.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _wait_exited(pid)
        _record(sink, "lost", "lost too")
        sink.flush()
        assert sink.dropped == 2
    finally:
        sink.shutdown()
    assert "lost" not in _names(receiver)


def test_spans_sent_while_the_collector_is_down_arrive_once_it_is_back(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Where a collector was: nothing listens there now.
    gone = otlp.Receiver()
    port = gone.port
    gone.stop()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    sink = _sink()
    try:
        _record(sink, "during the outage")
        sink.flush()
        # The relay's exporter (its stderr is this test's) has failed once, and will retry.
        said = ""
        deadline = time.monotonic() + 30
        while "retrying" not in said and time.monotonic() < deadline:
            time.sleep(0.05)
            said += capfd.readouterr().err
        assert "retrying" in said
        back = otlp.Receiver(port)
        try:
            # Retried on a new channel (the SDK reconnects on UNAVAILABLE), same bytes.
            assert back.wait_for(lambda: _names(back) == ["during the outage"])
        finally:
            back.stop()
    finally:
        sink.shutdown()


def _gateway(
    registry_dir: Path,
    pki_dir: Path,
    folder: Path,
    receiver: otlp.Receiver,
    *,
    delay_ms: int,
    relay: str = "1",
) -> processes.Proc:
    (folder / "state").mkdir()
    return processes.start(
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(registry_dir),
            "--pki-dir",
            str(pki_dir),
        ],
        folder / "gateway.log",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
            "JISR_STATE_DIR": str(folder / "state"),
            "JISR_OTLP_RELAY": relay,
        },
    )


def _one_call(gateway: processes.Proc, pki_dir: Path, registry_dir: Path) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as client:
        client.verify("ASD_ELIGIBILITY", hid, "ASD")


def test_a_gateway_stopped_by_sigterm_hands_its_last_spans_to_the_collector(
    receiver: otlp.Receiver, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    # Spans wait a minute in the gateway's batch: only the stop can send them.
    gateway = _gateway(registry_dir, pki_dir, tmp_path, receiver, delay_ms=60_000)
    try:
        (relay,) = child_pids(gateway.popen.pid, "gateway.telemetry.span_export")
        _one_call(gateway, pki_dir, registry_dir)
        assert SERVER not in _names(receiver)
    finally:
        assert gateway.stop(signal.SIGTERM) == 0
    assert receiver.wait_for(lambda: SERVER in _names(receiver))
    assert _wait_exited(relay)


def test_the_relay_ends_when_its_gateway_is_killed(
    receiver: otlp.Receiver, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    gateway = _gateway(registry_dir, pki_dir, tmp_path, receiver, delay_ms=100)
    try:
        (relay,) = child_pids(gateway.popen.pid, "gateway.telemetry.span_export")
        _one_call(gateway, pki_dir, registry_dir)
        assert receiver.wait_for(lambda: SERVER in _names(receiver))
    finally:
        gateway.stop(signal.SIGKILL)
    assert _wait_exited(relay)


def test_with_the_relay_off_the_gateway_exports_from_its_own_process(
    receiver: otlp.Receiver, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    gateway = _gateway(registry_dir, pki_dir, tmp_path, receiver, delay_ms=100, relay="0")
    try:
        assert child_pids(gateway.popen.pid, "gateway.telemetry.span_export") == []
        _one_call(gateway, pki_dir, registry_dir)
        assert receiver.wait_for(lambda: SERVER in _names(receiver))
    finally:
        gateway.stop()
    assert {"jisr.authenticate", "jisr.audit", "jisr.receipt"} <= set(_names(receiver))
