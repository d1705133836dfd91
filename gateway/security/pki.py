"""A development and operations PKI for the gateway: CA, TLS certificates, signing keys.

Pure functions over one directory (layout in docs/pki.md):

    <root>/ca.crt, ca.key                 the gateway CA (EC P-256, self-signed)
    <root>/server.crt, server.key         the gateway's TLS server certificate
    <root>/gateway_signing.key            the gateway's receipt-signing key (ES256)
    <root>/gateway.jwks.json              its public JWKS (what partners verify receipts with)
    <root>/gateway_id                     the gateway id (`aud` of request tokens)
    <root>/trust/<INSTITUTION>.jwks.json  each institution's public signing keys (security/trust.py)
    <root>/institutions/<INSTITUTION>/    tls.crt, tls.key, signing.key, signing.json

Private keys are unencrypted PEM (PKCS#8) with mode 0600: fit for development and tests,
not for production (docs/pki.md says what to do instead). Every file is written atomically.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from gateway.security.trust import SUFFIX

INSTITUTION_ID = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
ALGORITHMS = ("ES256", "EdDSA")
DEFAULT_GATEWAY_ID = "jisr-gateway"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=730)
CLIENT_VALIDITY = timedelta(days=365)
BACKDATE = timedelta(minutes=5)

SigningKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey
_PRIVATE = 0o600
_PUBLIC = 0o644
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}


@dataclass(frozen=True)
class PkiPaths:
    """Where each file of a PKI directory lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def gateway_signing_key(self) -> Path:
        return self.root / "gateway_signing.key"

    @property
    def gateway_jwks_file(self) -> Path:
        return self.root / "gateway.jwks.json"

    @property
    def gateway_id_file(self) -> Path:
        return self.root / "gateway_id"

    @property
    def trust_dir(self) -> Path:
        return self.root / "trust"

    @property
    def institutions_dir(self) -> Path:
        return self.root / "institutions"

    def institution_dir(self, institution: str) -> Path:
        return self.institutions_dir / _checked_id(institution)

    def trust_file(self, institution: str) -> Path:
        return self.trust_dir / f"{_checked_id(institution)}{SUFFIX}"


@dataclass(frozen=True)
class InstitutionFiles:
    """One institution's credentials: TLS client certificate and key, current signing key."""

    institution: str
    tls_cert: Path
    tls_key: Path
    signing_key: Path
    kid: str
    alg: str


# --- public API ---------------------------------------------------------------------------


def init(
    root: Path,
    *,
    gateway_id: str = DEFAULT_GATEWAY_ID,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    force: bool = False,
) -> PkiPaths:
    """Create the CA, the server certificate for `hosts`, and the gateway's signing key.

    Refuses (FileExistsError) when a CA is already there unless `force`. With `force`,
    the CA, server certificate and gateway key are replaced; institutions' trusted keys are
    kept, their TLS certificates must be re-issued, and the previous gateway public keys stay
    in `gateway.jwks.json` so that earlier receipts still verify.
    """
    paths = PkiPaths(Path(root))
    if not gateway_id or not gateway_id.isprintable() or gateway_id != gateway_id.strip():
        raise ValueError(f"gateway id {gateway_id!r}: must be non-empty printable text")
    if isinstance(hosts, str) or not hosts:
        raise ValueError("hosts: give at least one DNS name or IP address")
    if not force:
        for existing in (paths.ca_cert, paths.ca_key):
            if existing.exists():
                raise FileExistsError(
                    f"{existing}: a PKI already exists here (use force to replace it)"
                )
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.trust_dir.mkdir(exist_ok=True)
    paths.institutions_dir.mkdir(mode=0o700, exist_ok=True)
    now = _now()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Jisr"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{gateway_id} CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        _leaf(ca_cert, ca_key, server_key.public_key(), _name(gateway_id, "Jisr"))
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )

    signing_key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(signing_key)
    published = paths.gateway_jwks_file
    previous = _read_jwks(published) if force and published.exists() else {"keys": []}
    keys = [jwk, *(k for k in previous["keys"] if k.get("kid") != jwk["kid"])]

    _write(paths.ca_key, _private_pem(ca_key), _PRIVATE)
    _write(paths.ca_cert, _cert_pem(ca_cert), _PUBLIC)
    _write(paths.server_key, _private_pem(server_key), _PRIVATE)
    _write(paths.server_cert, _cert_pem(server_cert), _PUBLIC)
    # Publish the public key before the private key goes live (a crash leaves it unused).
    _write_json(paths.gateway_jwks_file, {"keys": keys})
    _write(paths.gateway_signing_key, _private_pem(signing_key), _PRIVATE)
    _write(paths.gateway_id_file, f"{gateway_id}\n".encode(), _PUBLIC)
    return paths


def issue(
    root: Path,
    institution: str,
    *,
    alg: str = "ES256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca_root: Path | None = None,
) -> InstitutionFiles:
    """A TLS client certificate (CN=O=`institution`) and a fresh signing key, now trusted.

    Signed by the CA of `root`, or of `ca_root` when given (a certificate the gateway does not
    trust, for tests). Validity defaults to now-5 min .. now+1 year; explicit bounds must be
    timezone-aware (a past `not_after` makes an expired certificate). Re-issuing rotates:
    new files replace the old ones, the old public signing key stays in the trust store.
    """
    paths = PkiPaths(Path(root))
    _checked_id(institution)
    _checked_alg(alg)
    ca_cert, ca_key = _load_ca(PkiPaths(Path(ca_root)) if ca_root is not None else paths)
    now = _now()
    start = _aware("not_before", not_before) if not_before is not None else now - BACKDATE
    end = _aware("not_after", not_after) if not_after is not None else now + CLIENT_VALIDITY
    if end <= start:
        raise ValueError(f"{institution}: not_after ({end}) must be after not_before ({start})")
    end = min(end, ca_cert.not_valid_after_utc)

    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls_cert = (
        _leaf(ca_cert, ca_key, tls_key.public_key(), _name(institution, institution))
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = paths.institution_dir(institution)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = _rotate_signing_key(paths, institution, alg)
    _write(files.tls_key, _private_pem(tls_key), _PRIVATE)
    _write(files.tls_cert, _cert_pem(tls_cert), _PUBLIC)
    return files


def add_signing_key(root: Path, institution: str, alg: str = "ES256") -> InstitutionFiles:
    """Rotate `institution`'s signing key; its TLS files and older keys stay as they are."""
    paths = PkiPaths(Path(root))
    load_institution(paths.root, institution)
    _checked_alg(alg)
    return _rotate_signing_key(paths, institution, alg)


def revoke_key(root: Path, institution: str, kid: str) -> None:
    """Mark `kid` revoked in `institution`'s trust file (idempotent); ValueError if unknown."""
    file = PkiPaths(Path(root)).trust_file(institution)
    if not file.exists():
        raise FileNotFoundError(
            f"{file}: no trusted keys for {institution} (run `jisr pki issue {institution}`)"
        )
    doc = _read_jwks(file)
    known = [str(k.get("kid")) for k in doc["keys"]]
    if kid not in known:
        raise ValueError(f"{file}: {institution} has no key {kid!r} (known: {', '.join(known)})")
    revoked: list[str] = list(doc.get("revoked", []))
    if kid not in revoked:
        revoked.append(kid)
    _write_json(file, {**doc, "revoked": revoked})


def load_institution(root: Path, institution: str) -> InstitutionFiles:
    """`institution`'s current credentials; FileNotFoundError says what to run if missing."""
    paths = PkiPaths(Path(root))
    folder = paths.institution_dir(institution)
    files = _files(paths, institution, kid="", alg="")
    meta = folder / "signing.json"
    for needed in (files.tls_cert, files.tls_key, files.signing_key, meta):
        if not needed.exists():
            raise FileNotFoundError(
                f"{needed}: missing credentials for {institution} "
                f"(run `jisr pki issue {institution}`)"
            )
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        kid, alg = str(info["kid"]), str(info["alg"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta}: not a valid signing key description ({exc})") from exc
    key = _load_private_key(files.signing_key)
    actual = public_jwk(key)
    if actual["kid"] != kid or actual["alg"] != alg:
        raise ValueError(
            f"{meta}: says {alg} key {kid}, but {files.signing_key} holds "
            f"{actual['alg']} key {actual['kid']} (run `jisr pki issue {institution}`)"
        )
    return _files(paths, institution, kid=kid, alg=alg)


def gateway_id(root: Path) -> str:
    """The gateway id written by `init` (the `aud` of request tokens)."""
    file = PkiPaths(Path(root)).gateway_id_file
    try:
        value = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{file}: no gateway id (run `jisr pki init`)") from exc
    if not value:
        raise ValueError(f"{file}: the gateway id is empty")
    return value


def gateway_jwks(root: Path) -> dict[str, Any]:
    """The gateway's public JWKS for receipts: the current key first, then retired ones."""
    file = PkiPaths(Path(root)).gateway_jwks_file
    if not file.exists():
        raise FileNotFoundError(f"{file}: no gateway JWKS (run `jisr pki init`)")
    return _read_jwks(file)


def load_gateway_signing_key(root: Path) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The gateway's receipt-signing key and its kid (checked to be published in the JWKS)."""
    paths = PkiPaths(Path(root))
    file = paths.gateway_signing_key
    if not file.exists():
        raise FileNotFoundError(f"{file}: no gateway signing key (run `jisr pki init`)")
    key = _load_private_key(file)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{file}: the gateway signing key must be EC P-256 (ES256)")
    kid = public_jwk(key)["kid"]
    published = {k.get("kid") for k in gateway_jwks(paths.root)["keys"]}
    if kid not in published:
        raise ValueError(f"{file}: key {kid} is not in {paths.gateway_jwks_file}")
    return key, kid


def thumbprint(jwk: Mapping[str, str]) -> str:
    """The RFC 7638 JWK thumbprint: base64url (unpadded) SHA-256 of the required members."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(str(kty))
    if members is None:
        raise ValueError(f"thumbprint: unsupported key type {kty!r}")
    missing = [m for m in members if m not in jwk]
    if missing:
        raise ValueError(f"thumbprint: {kty} key lacks {', '.join(missing)}")
    canonical = json.dumps(
        {m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(key: SigningKey) -> dict[str, str]:
    """The public JWK of a signing key, with kid (RFC 7638 thumbprint), alg and use."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 keys must be on P-256")
        raw: Mapping[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk = {m: str(raw[m]) for m in ("kty", "crv", "x", "y")}
        alg = "ES256"
    elif isinstance(key, Ed25519PrivateKey):
        raw = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk = {m: str(raw[m]) for m in ("kty", "crv", "x")}
        alg = "EdDSA"
    else:
        raise ValueError(f"unsupported signing key type {type(key).__name__}")
    return {**jwk, "kid": thumbprint(jwk), "alg": alg, "use": "sig"}


# --- helpers ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _checked_id(institution: str) -> str:
    if not isinstance(institution, str) or not INSTITUTION_ID.fullmatch(institution):
        raise ValueError(
            f"institution id {institution!r}: must match {INSTITUTION_ID.pattern} "
            "(upper-case letter, then 1-31 upper-case letters, digits or _)"
        )
    return institution


def _checked_alg(alg: str) -> None:
    if alg not in ALGORITHMS:
        raise ValueError(f"signing algorithm {alg!r}: must be one of {', '.join(ALGORITHMS)}")


def _aware(what: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} ({value}) must be timezone-aware")
    return value.astimezone(UTC)


def _files(paths: PkiPaths, institution: str, *, kid: str, alg: str) -> InstitutionFiles:
    folder = paths.institution_dir(institution)
    return InstitutionFiles(
        institution=institution,
        tls_cert=folder / "tls.crt",
        tls_key=folder / "tls.key",
        signing_key=folder / "signing.key",
        kid=kid,
        alg=alg,
    )


def _rotate_signing_key(paths: PkiPaths, institution: str, alg: str) -> InstitutionFiles:
    key: SigningKey = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else Ed25519PrivateKey.generate()
    )
    jwk = public_jwk(key)
    trust_file = paths.trust_file(institution)
    paths.trust_dir.mkdir(parents=True, exist_ok=True)
    doc = _read_jwks(trust_file) if trust_file.exists() else {"keys": [], "revoked": []}
    doc["keys"] = [*doc["keys"], jwk]
    doc.setdefault("revoked", [])
    # Trust the public key first: a crash then leaves a trusted key nobody holds, never a
    # private key the gateway would refuse.
    _write_json(trust_file, doc)
    files = _files(paths, institution, kid=jwk["kid"], alg=alg)
    files.signing_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(files.signing_key, _private_pem(key), _PRIVATE)
    _write_json(files.signing_key.with_name("signing.json"), {"kid": jwk["kid"], "alg": alg})
    return files


def _load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    for needed in (paths.ca_cert, paths.ca_key):
        if not needed.exists():
            raise FileNotFoundError(f"{needed}: no gateway CA (run `jisr pki init`)")
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = _load_private_key(paths.ca_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.ca_key}: the CA key must be an EC key")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        raise ValueError(f"{paths.ca_key}: does not match {paths.ca_cert}")
    return cert, key


def _load_private_key(file: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{file}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey):
        raise ValueError(f"{file}: expected an EC or Ed25519 key, not {type(key).__name__}")
    return key


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
) -> x509.CertificateBuilder:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or not re.fullmatch(r"[A-Za-z0-9*.-]+", host):
                raise ValueError(f"host {host!r}: not a DNS name or IP address") from None
            names.append(x509.DNSName(host))
    return names


def _private_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _read_jwks(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: not a readable JWKS ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{file}: a JWKS needs a 'keys' array")
    return doc


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    _write(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), _PUBLIC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically, the file created with `mode` from the start."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have narrowed it
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
