"""The server as an operator sees it: health, reflection, and a graceful drain on SIGTERM."""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import identities, processes, registry_rows


def test_health_check_says_serving(gateway: processes.Proc, demo: Credentials) -> None:
    with identities.channel(gateway.target, demo) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jisr.v1.RegistryExchange"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_jisr_services(gateway: processes.Proc, demo: Credentials) -> None:
    with identities.channel(gateway.target, demo) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    names = {s.name for s in response.list_services_response.service}
    assert "jisr.v1.RegistryExchange" in names
    assert "jisr.v1.ContestCases" in names
    assert "grpc.health.v1.Health" in names


def _batches(feed: queue.Queue[list[str] | None]) -> Iterator[list[str]]:
    while (item := feed.get(timeout=30)) is not None:
        yield item


def test_sigterm_lets_an_open_stream_finish_and_refuses_new_calls(
    registry_dir: Path, pki_dir: Path, demo: Credentials, tmp_path: Path
) -> None:
    proc = processes.start(
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
    )
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    feed: queue.Queue[list[str] | None] = queue.Queue()
    feed.put([hid])
    try:
        with JisrClient(proc.target, demo, timeout=60) as client:
            stream = client.verify_batches("RECERTIFICATION", "ASD", _batches(feed), timeout=60)
            assert next(stream).batch_index == 0
            proc.popen.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # the server is draining now
            with JisrClient(proc.target, demo, timeout=10) as late, pytest.raises(JisrError) as err:
                late.verify("RECERTIFICATION", hid, "ASD")
            feed.put([hid])
            assert next(stream).batch_index == 1
            feed.put(None)
            assert list(stream) == []
        assert proc.popen.wait(30) == 0
    finally:
        feed.put(None)
        proc.stop()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "stopped" in proc.output()
