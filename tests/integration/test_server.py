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

from gateway.client import JisrClient, JisrError
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pb.jisr.v1 import registry_pb2_grpc
from tests.support import processes, registry_rows


def test_health_check_says_serving(gateway: processes.Proc) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jisr.v1.RegistryExchange"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_jisr_services(gateway: processes.Proc) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    names = {s.name for s in response.list_services_response.service}
    assert "jisr.v1.RegistryExchange" in names
    assert "grpc.health.v1.Health" in names


def _requests(
    feed: queue.Queue[pb.VerifyEligibilityBatchRequest | None],
) -> Iterator[pb.VerifyEligibilityBatchRequest]:
    while (item := feed.get(timeout=30)) is not None:
        yield item


def test_sigterm_lets_an_open_stream_finish_and_refuses_new_calls(
    registry_dir: Path, tmp_path: Path
) -> None:
    proc = processes.start(
        ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)],
        tmp_path / "gateway.log",
    )
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    batch = pb.VerifyEligibilityBatchRequest(
        purpose="RECERTIFICATION", programme="ASD", subjects=[pb.Subject(household_id=hid)]
    )
    feed: queue.Queue[pb.VerifyEligibilityBatchRequest | None] = queue.Queue()
    try:
        with grpc.insecure_channel(proc.target) as channel:
            stream = registry_pb2_grpc.RegistryExchangeStub(channel).VerifyEligibilityBatch(
                _requests(feed), timeout=60
            )
            feed.put(batch)
            assert next(stream).batch_index == 0
            proc.popen.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # the server is draining now
            with JisrClient(proc.target, timeout=10) as late, pytest.raises(JisrError) as err:
                late.verify("RECERTIFICATION", hid, "ASD")
            feed.put(batch)
            assert next(stream).batch_index == 1
            feed.put(None)
            assert list(stream) == []
        assert proc.popen.wait(30) == 0
    finally:
        feed.put(None)
        proc.stop()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "stopped" in proc.output()
