"""The development PKI: certificates chain to the gateway CA, keys land in the trust store."""

from __future__ import annotations

import ipaddress
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.security import pki, trust

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
        "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-b"
        "FTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "pki"
    pki.init(path)
    return path


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ca(root: Path) -> x509.Certificate:
    return _cert(pki.PkiPaths(root).ca_cert)


def _jwks(root: Path, institution: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(pki.PkiPaths(root).trust_file(institution).read_text())
    return doc


def test_ca_is_a_self_signed_ca_limited_to_signing_leaves(root: Path) -> None:
    ca = _ca(root)
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > timedelta(days=9 * 365)


def test_server_certificate_chains_to_the_ca(root: Path) -> None:
    server = _cert(pki.PkiPaths(root).server_cert)
    server.verify_directly_issued_by(_ca(root))
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_server_certificate_covers_localhost_and_loopback_addresses(root: Path) -> None:
    server = _cert(pki.PkiPaths(root).server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_server_certificate_covers_the_given_hosts(tmp_path: Path) -> None:
    paths = pki.init(tmp_path, hosts=["jisr.example.ma", "10.0.0.7"])
    san = _cert(paths.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["jisr.example.ma"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]


def test_init_writes_the_gateway_id(tmp_path: Path) -> None:
    pki.init(tmp_path, gateway_id="jisr-rabat-1")
    assert pki.gateway_id(tmp_path) == "jisr-rabat-1"


def test_init_creates_an_empty_trust_store(root: Path) -> None:
    assert trust.load_dir(pki.PkiPaths(root).trust_dir).institutions == frozenset()


def test_init_refuses_to_overwrite_an_existing_ca(root: Path) -> None:
    with pytest.raises(FileExistsError, match="ca"):
        pki.init(root)


def test_init_with_force_replaces_the_ca(root: Path) -> None:
    before = _ca(root).serial_number
    pki.init(root, force=True)
    assert _ca(root).serial_number != before


def test_forced_init_keeps_the_previous_gateway_key_published(root: Path) -> None:
    _, old_kid = pki.load_gateway_signing_key(root)
    pki.init(root, force=True)
    _, new_kid = pki.load_gateway_signing_key(root)
    kids = [k["kid"] for k in pki.gateway_jwks(root)["keys"]]
    assert kids == [new_kid, old_kid]


def test_gateway_jwks_holds_the_public_receipt_key(root: Path) -> None:
    key, kid = pki.load_gateway_signing_key(root)
    (jwk,) = pki.gateway_jwks(root)["keys"]
    assert jwk["kid"] == kid == pki.thumbprint(jwk)
    assert (jwk["alg"], jwk["use"], jwk["crv"]) == ("ES256", "sig", "P-256")
    assert "d" not in jwk
    public, alg = trust.key_from_jwk(jwk)
    assert alg == "ES256"
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()


def test_thumbprint_matches_the_rfc_7638_example() -> None:
    assert pki.thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_thumbprint_ignores_optional_members() -> None:
    bare = {k: RFC7638_JWK[k] for k in ("kty", "n", "e")}
    assert pki.thumbprint(bare) == RFC7638_THUMBPRINT


def test_client_certificate_chains_to_the_ca(root: Path) -> None:
    files = pki.issue(root, "CNSS")
    _cert(files.tls_cert).verify_directly_issued_by(_ca(root))


def test_client_certificate_names_the_institution(root: Path) -> None:
    cert = _cert(pki.issue(root, "CNSS").tls_cert)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["CNSS"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "CNSS"
    ]


def test_client_certificate_is_for_client_authentication_only(root: Path) -> None:
    cert = _cert(pki.issue(root, "CNSS").tls_cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_is_valid_now_for_a_year(root: Path) -> None:
    cert = _cert(pki.issue(root, "CNSS").tls_cert)
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc < now
    assert timedelta(days=364) < cert.not_valid_after_utc - now <= timedelta(days=366)


def test_explicit_validity_makes_an_expired_certificate(root: Path) -> None:
    now = datetime.now(UTC)
    files = pki.issue(
        root, "CNSS", not_before=now - timedelta(days=2), not_after=now - timedelta(days=1)
    )
    cert = _cert(files.tls_cert)
    assert cert.not_valid_after_utc < now
    cert.verify_directly_issued_by(_ca(root))


def test_validity_bounds_must_be_timezone_aware(root: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.issue(root, "CNSS", not_after=datetime(2030, 1, 1))


def test_ca_root_makes_a_certificate_the_gateway_ca_did_not_sign(
    root: Path, tmp_path: Path
) -> None:
    other = pki.init(tmp_path / "other")
    cert = _cert(pki.issue(root, "CNSS", ca_root=other.root).tls_cert)
    cert.verify_directly_issued_by(_cert(other.ca_cert))
    with pytest.raises((InvalidSignature, ValueError)):
        cert.verify_directly_issued_by(_ca(root))


@pytest.mark.parametrize(
    ("alg", "key_type"), [("ES256", ec.EllipticCurvePublicKey), ("EdDSA", Ed25519PublicKey)]
)
def test_trust_store_loads_the_signing_key_with_its_algorithm(
    root: Path, alg: str, key_type: type
) -> None:
    files = pki.issue(root, "RNP", alg=alg)
    key = trust.load_dir(pki.PkiPaths(root).trust_dir).get("RNP", files.kid)
    assert key is not None
    assert (key.alg, key.revoked, files.alg) == (alg, False, alg)
    assert isinstance(key.key, key_type)


def test_trusted_key_is_the_public_half_of_the_signing_key(root: Path) -> None:
    files = pki.issue(root, "RNP", alg="EdDSA")
    private = serialization.load_pem_private_key(files.signing_key.read_bytes(), None)
    assert isinstance(private, Ed25519PrivateKey)
    trusted = trust.load_dir(pki.PkiPaths(root).trust_dir).get("RNP", files.kid)
    assert trusted is not None
    raw = serialization.PublicFormat.Raw
    assert trusted.key.public_bytes(serialization.Encoding.Raw, raw) == (
        private.public_key().public_bytes(serialization.Encoding.Raw, raw)
    )


def test_trust_file_holds_public_members_only(root: Path) -> None:
    pki.issue(root, "RNP", alg="EdDSA")
    pki.issue(root, "CNSS")
    for institution in ("RNP", "CNSS"):
        (jwk,) = _jwks(root, institution)["keys"]
        assert "d" not in jwk
        assert jwk["use"] == "sig"
        assert jwk["kid"] == pki.thumbprint(jwk)


def test_signing_json_names_the_current_key(root: Path) -> None:
    files = pki.issue(root, "ANSS", alg="EdDSA")
    meta = json.loads((files.signing_key.parent / "signing.json").read_text())
    assert meta == {"kid": files.kid, "alg": "EdDSA"}


def test_reissuing_keeps_the_previous_key_trusted(root: Path) -> None:
    first = pki.issue(root, "RSU")
    second = pki.issue(root, "RSU")
    store = trust.load_dir(pki.PkiPaths(root).trust_dir)
    assert first.kid != second.kid
    assert store.get("RSU", first.kid) is not None
    assert store.get("RSU", second.kid) is not None
    assert pki.load_institution(root, "RSU").kid == second.kid


def test_adding_a_signing_key_keeps_tls_files_and_the_old_key(root: Path) -> None:
    first = pki.issue(root, "RSU")
    tls_before = first.tls_cert.read_bytes()
    rotated = pki.add_signing_key(root, "RSU", alg="EdDSA")
    store = trust.load_dir(pki.PkiPaths(root).trust_dir)
    assert first.tls_cert.read_bytes() == tls_before
    assert store.get("RSU", first.kid) is not None
    new = store.get("RSU", rotated.kid)
    assert new is not None
    assert new.alg == "EdDSA"
    assert pki.load_institution(root, "RSU") == rotated


def test_adding_a_signing_key_needs_an_issued_institution(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="jisr pki issue RSU"):
        pki.add_signing_key(root, "RSU")


def test_revoked_key_is_marked_revoked_in_the_trust_store(root: Path) -> None:
    old = pki.issue(root, "CNSS")
    new = pki.add_signing_key(root, "CNSS")
    pki.revoke_key(root, "CNSS", old.kid)
    store = trust.load_dir(pki.PkiPaths(root).trust_dir)
    revoked, current = store.get("CNSS", old.kid), store.get("CNSS", new.kid)
    assert revoked is not None
    assert current is not None
    assert (revoked.revoked, current.revoked) == (True, False)


def test_revoking_twice_lists_the_key_once(root: Path) -> None:
    files = pki.issue(root, "CNSS")
    pki.revoke_key(root, "CNSS", files.kid)
    pki.revoke_key(root, "CNSS", files.kid)
    assert _jwks(root, "CNSS")["revoked"] == [files.kid]


def test_revoking_an_unknown_key_is_refused(root: Path) -> None:
    pki.issue(root, "CNSS")
    with pytest.raises(ValueError, match="no key 'nope'"):
        pki.revoke_key(root, "CNSS", "nope")


def test_private_keys_are_readable_by_the_owner_only(root: Path) -> None:
    files = pki.issue(root, "CNSS")
    paths = pki.PkiPaths(root)
    for key in (paths.ca_key, paths.server_key, paths.gateway_signing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for key in (files.tls_key, files.signing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_certificates_are_world_readable(root: Path) -> None:
    files = pki.issue(root, "CNSS")
    paths = pki.PkiPaths(root)
    for cert in (paths.ca_cert, paths.server_cert, files.tls_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644, cert


def test_no_temporary_files_are_left_behind(root: Path) -> None:
    pki.issue(root, "CNSS")
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("bad", ["cnss", "C", "1CNSS", "CN-SS", "../CNSS", "C" * 33, ""])
def test_bad_institution_ids_are_refused(root: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="institution id"):
        pki.issue(root, bad)


def test_unknown_signing_algorithm_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="RS256"):
        pki.issue(root, "CNSS", alg="RS256")


def test_loading_a_missing_institution_says_what_to_run(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="jisr pki issue ANSS"):
        pki.load_institution(root, "ANSS")


def test_load_institution_returns_what_issue_wrote(root: Path) -> None:
    issued = pki.issue(root, "ANSS", alg="EdDSA")
    assert pki.load_institution(root, "ANSS") == issued


def test_issuing_before_init_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="jisr pki init"):
        pki.issue(tmp_path, "CNSS")
