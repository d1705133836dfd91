"""What the PKI refuses, and what it says, when its files are missing, damaged or mixed up."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.security import pki


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PKI with CNSS issued, copied for each test (key generation takes time)."""
    root = tmp_path_factory.mktemp("pristine") / "pki"
    pki.init(root)
    pki.issue(root, "CNSS")
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pki"
    shutil.copytree(pristine, copy)
    return copy


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- init and issue ------------------------------------------------------------------


@pytest.mark.parametrize("gateway_id", ["", " jisr", "jisr\n"])
def test_init_refuses_a_gateway_id_that_is_not_plain_text(tmp_path: Path, gateway_id: str) -> None:
    with pytest.raises(ValueError, match=r"must be non-empty printable text"):
        pki.init(tmp_path / "pki", gateway_id=gateway_id)
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("hosts", [[], "localhost"])
def test_init_needs_at_least_one_host(tmp_path: Path, hosts: list[str] | str) -> None:
    with pytest.raises(ValueError, match=r"^hosts: give at least one DNS name or IP address$"):
        pki.init(tmp_path / "pki", hosts=hosts)


@pytest.mark.parametrize("host", ["", "bad host", "a/b"])
def test_init_refuses_a_host_that_is_no_name_or_address(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match=r"not a DNS name or IP address"):
        pki.init(tmp_path / "pki", hosts=["localhost", host])


def test_issue_refuses_a_validity_that_ends_before_it_starts(root: Path) -> None:
    start = datetime.now(UTC)
    with pytest.raises(ValueError, match=r"^MEN: not_after .* must be after not_before"):
        pki.issue(root, "MEN", not_before=start, not_after=start - timedelta(days=1))


def test_issue_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no gateway CA \(run `jisr pki init`\)"):
        pki.issue(tmp_path, "MEN")


def test_issue_refuses_a_ca_key_that_does_not_match_the_certificate(root: Path) -> None:
    paths = pki.PkiPaths(root)
    paths.ca_key.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError, match=f"^{paths.ca_key}: does not match {paths.ca_cert}$"):
        pki.issue(root, "MEN")


def test_issue_refuses_a_ca_key_that_is_not_pem(root: Path) -> None:
    paths = pki.PkiPaths(root)
    paths.ca_key.write_text("not a key")
    with pytest.raises(ValueError, match=r"not an unencrypted PEM private key"):
        pki.issue(root, "MEN")


def test_issue_refuses_a_ca_key_that_is_not_ec(root: Path) -> None:
    paths = pki.PkiPaths(root)
    paths.ca_key.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(ValueError, match=r"expected an EC or Ed25519 key, not"):
        pki.issue(root, "MEN")


# --- an institution's signing key ----------------------------------------------------


def test_a_signing_description_that_is_not_json_is_refused(root: Path) -> None:
    meta = pki.PkiPaths(root).institution_dir("CNSS") / "signing.json"
    meta.write_text("{")
    with pytest.raises(ValueError, match=r"not a valid signing key description"):
        pki.load_institution(root, "CNSS")


def test_a_signing_description_naming_another_key_is_refused(root: Path) -> None:
    meta = pki.PkiPaths(root).institution_dir("CNSS") / "signing.json"
    meta.write_text(json.dumps({"kid": "someone-else", "alg": "ES256"}))
    with pytest.raises(ValueError, match=r"says ES256 key someone-else, but .* holds ES256 key"):
        pki.load_institution(root, "CNSS")


# --- the gateway's identity and keys -------------------------------------------------


def test_a_missing_gateway_id_says_to_run_init(root: Path) -> None:
    pki.PkiPaths(root).gateway_id_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"no gateway id \(run `jisr pki init`\)"):
        pki.gateway_id(root)


def test_an_empty_gateway_id_is_refused(root: Path) -> None:
    pki.PkiPaths(root).gateway_id_file.write_text("\n")
    with pytest.raises(ValueError, match=r"the gateway id is empty$"):
        pki.gateway_id(root)


def test_a_missing_gateway_jwks_says_to_run_init(root: Path) -> None:
    pki.PkiPaths(root).gateway_jwks_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"no gateway JWKS \(run `jisr pki init`\)"):
        pki.gateway_jwks(root)


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "not a readable JWKS"), ('{"keys": {}}', "a JWKS needs a 'keys' array")],
)
def test_a_damaged_gateway_jwks_is_refused(root: Path, text: str, message: str) -> None:
    pki.PkiPaths(root).gateway_jwks_file.write_text(text)
    with pytest.raises(ValueError, match=message):
        pki.gateway_jwks(root)


def test_a_missing_gateway_signing_key_says_to_run_init(root: Path) -> None:
    pki.PkiPaths(root).gateway_signing_key.unlink()
    with pytest.raises(FileNotFoundError, match=r"no gateway signing key \(run `jisr pki init`\)"):
        pki.load_gateway_signing_key(root)


def test_a_gateway_signing_key_off_p256_is_refused(root: Path) -> None:
    pki.PkiPaths(root).gateway_signing_key.write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match=r"must be EC P-256"):
        pki.load_gateway_signing_key(root)


def test_an_unpublished_gateway_signing_key_is_refused(root: Path) -> None:
    paths = pki.PkiPaths(root)
    paths.gateway_signing_key.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError, match=f"is not in {paths.gateway_jwks_file}$"):
        pki.load_gateway_signing_key(root)


# --- keys and thumbprints ------------------------------------------------------------


def test_a_thumbprint_of_an_unknown_key_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^thumbprint: unsupported key type 'XYZ'$"):
        pki.thumbprint({"kty": "XYZ"})


def test_a_thumbprint_of_an_incomplete_key_names_what_it_lacks() -> None:
    with pytest.raises(ValueError, match=r"^thumbprint: EC key lacks x, y$"):
        pki.thumbprint({"kty": "EC", "crv": "P-256"})


def test_a_public_jwk_of_an_ec_key_off_p256_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^ES256 keys must be on P-256$"):
        pki.public_jwk(ec.generate_private_key(ec.SECP384R1()))


def test_a_public_jwk_of_an_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match=r"^unsupported signing key type"):
        pki.public_jwk(key)  # type: ignore[arg-type]


# --- writing -------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(root: Path) -> None:
    file = pki.PkiPaths(root).gateway_id_file
    before = file.read_text()
    with pytest.raises(TypeError):
        pki._write(file, "text, not bytes", 0o644)  # type: ignore[arg-type]
    assert file.read_text() == before
    assert not list(file.parent.glob(f".{file.name}.*"))
