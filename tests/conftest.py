"""Shared fixtures: one synthetic registry and one gateway process per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from adapters.demo_data import generate
from gateway.client import JisrClient
from gateway.pb.jisr.v1 import registry_pb2_grpc
from tests.support import processes

SESSION_HOUSEHOLDS = 12_000
SESSION_SEED = 5


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic registry shared by the session's tests (read-only for them)."""
    data_dir = tmp_path_factory.mktemp("registry")
    generate(data_dir, SESSION_HOUSEHOLDS, SESSION_SEED)
    return data_dir


@pytest.fixture(scope="session")
def gateway(
    registry_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    """`jisr serve` in its own process, every institution embedded."""
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc = processes.start(
        ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)], log
    )
    yield proc
    proc.stop()


@pytest.fixture
def client(gateway: processes.Proc) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, timeout=30) as c:
        yield c


@pytest.fixture
def stub(gateway: processes.Proc) -> Iterator[registry_pb2_grpc.RegistryExchangeStub]:
    """A raw stub, for requests the typed client would never build."""
    with grpc.insecure_channel(gateway.target) as channel:
        yield registry_pb2_grpc.RegistryExchangeStub(channel)
