"""How the DCI facade is reached (docs/dci.md, "Transport"): HTTPS when given a
certificate, plain HTTP on loopback, and plain HTTP elsewhere only when the operator says a
TLS terminator stands in front; a bad certificate is refused at start, naming the file."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from gateway.security.pki import PkiPaths
from tests.support import processes

pytestmark = pytest.mark.integration


def _jisr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip


def test_the_facade_serves_https_with_the_certificate_it_is_given(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    paths = PkiPaths(pki_dir)
    proc = processes.start(
        [
            "dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir),
            "--pki-dir", str(pki_dir), "--clients", str(tmp_path / "clients.json"),
            "--tls-cert", str(paths.server_cert), "--tls-key", str(paths.server_key),
        ],
        tmp_path / "dci.log",
    )  # fmt: skip
    try:
        jwks = httpx.get(
            f"https://{proc.target}/.well-known/jwks.json",
            verify=ssl.create_default_context(cafile=paths.ca_cert),
            timeout=30,
        )
        assert jwks.status_code == 200
        assert jwks.json()["keys"]
        with pytest.raises(httpx.HTTPError):  # nothing answers in clear on that port
            httpx.get(f"http://{proc.target}/.well-known/jwks.json", timeout=10)
    finally:
        proc.stop()


def test_plain_http_outside_loopback_is_refused_without_a_tls_terminator(tmp_path: Path) -> None:
    refused = _jisr("dci", "serve", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path))
    assert refused.returncode == 2
    assert "--behind-tls-proxy" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_certificate_that_is_not_pem_is_refused_naming_the_file(
    pki_dir: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate\n")
    refused = _jisr(
        "dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        "--tls-cert", str(bogus), "--tls-key", str(PkiPaths(pki_dir).server_key),
    )  # fmt: skip
    assert refused.returncode == 2
    assert str(bogus) in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_certificate_without_its_key_is_refused(pki_dir: Path, tmp_path: Path) -> None:
    refused = _jisr(
        "dci", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        "--tls-cert", str(PkiPaths(pki_dir).server_cert),
    )  # fmt: skip
    assert refused.returncode == 2
    assert "go together" in refused.stderr
