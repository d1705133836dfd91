"""A running gateway follows its PKI's trust store (docs/pki.md): an institution issued,
or a key revoked, with `jisr pki` while it serves is honoured without a restart — within
a second of the change, or at once on SIGHUP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.security import pki
from tests.support import processes, registry_rows


@pytest.fixture(scope="module")
def fresh_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    pki.init(root)
    pki.issue(root, "DEMO")
    return root


@pytest.fixture(scope="module")
def gateway(
    registry_dir: Path, fresh_pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[processes.Proc]:
    folder = tmp_path_factory.mktemp("reload")
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    proc = processes.start(
        [*args, "--pki-dir", str(fresh_pki)],
        folder / "gateway.log",
        {"JISR_STATE_DIR": str(folder)},
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def household(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1 OFFSET 5")


def _jisr_pki(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "pki", "--dir", str(root), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _verify(target: str, root: Path, institution: str, household: str) -> str:
    """ "OK", or the reason the gateway refused `institution`'s call."""
    with JisrClient(target, Credentials.from_pki(root, institution), timeout=10) as client:
        try:
            client.verify("ASD_ELIGIBILITY", household, "ASD")
        except JisrError as refused:
            return refused.reason
    return "OK"


def _eventually(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_an_institution_issued_while_the_gateway_serves_is_served_without_a_restart(
    gateway: processes.Proc, fresh_pki: Path, household: str
) -> None:
    assert not (fresh_pki / "trust" / "ANSS.jwks.json").exists()
    _jisr_pki(fresh_pki, "issue", "ANSS")
    assert _eventually(lambda: _verify(gateway.target, fresh_pki, "ANSS", household) == "OK")


def test_sighup_reloads_the_trust_store_at_once_and_says_so(
    gateway: processes.Proc, fresh_pki: Path
) -> None:
    _jisr_pki(fresh_pki, "issue", "MEN")
    gateway.popen.send_signal(signal.SIGHUP)
    assert _eventually(lambda: "jisr: trust store reloaded: 3 institutions" in gateway.output())
    assert gateway.popen.poll() is None  # still serving


def test_a_key_revoked_while_the_gateway_serves_is_refused_key_revoked(
    gateway: processes.Proc, fresh_pki: Path, household: str
) -> None:
    _jisr_pki(fresh_pki, "issue", "CNSS")
    kid = pki.load_institution(fresh_pki, "CNSS").kid
    _jisr_pki(fresh_pki, "revoke", "CNSS", "--", kid)  # a key id may start with "-"
    assert _eventually(
        lambda: _verify(gateway.target, fresh_pki, "CNSS", household) == "KEY_REVOKED"
    )
