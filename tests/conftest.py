"""Shared fixtures: one synthetic registry, one PKI and one gateway process per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.demo_data import generate
from gateway.sdk.client import Credentials, JisrClient
from tests.support import identities, processes

# The browser fixture (a real headless Chromium) for the console's tests.
pytest_plugins = ("tests.support.browser",)

SESSION_HOUSEHOLDS = 12_000
SESSION_SEED = 5


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic registry shared by the session's tests (read-only for them)."""
    data_dir = tmp_path_factory.mktemp("registry")
    generate(data_dir, SESSION_HOUSEHOLDS, SESSION_SEED)
    return data_dir


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI as `make run` builds it, with a few institutions."""
    return identities.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def gateway(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    """`jisr serve` in its own process, mTLS, every institution embedded."""
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
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
        log,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def demo(pki_dir: Path) -> Credentials:
    """The DEMO institution's credentials (the shipped policy grants it every method)."""
    return Credentials.from_pki(pki_dir, "DEMO")


@pytest.fixture
def client(gateway: processes.Proc, demo: Credentials) -> Iterator[JisrClient]:
    with JisrClient(gateway.target, demo, timeout=30) as c:
        yield c
