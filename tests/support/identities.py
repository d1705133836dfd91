"""A PKI like the one `make run` builds (for the tests and the bench), mTLS channels, and
raw signed calls for crafting attacks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from gateway.base.wire import SIGNATURE_METADATA
from gateway.sdk.client import Credentials
from gateway.security import pki
from gateway.services.registry_exchange import SERVICE

INSTITUTIONS = ("DEMO", "CNSS", "ANSS", "MEN", "MS", "CNDP", "ANR", "PAYER", "ONDH")


# CNSS's first signing key, kept here after being revoked, so a test can sign with it.
REVOKED_KEY_FILE = "revoked-signing.key"


def make_pki(root: Path) -> Path:
    """CA, server certificate, receipt key, the gateway's client identity, institutions;
    CNSS has rotated its signing key and revoked the first one."""
    pki.init(root)
    for name in ("JISR", *INSTITUTIONS):
        pki.issue(root, name)
    first = pki.load_institution(root, "CNSS")
    old_key = first.signing_key.read_bytes()
    old_meta = first.signing_key.with_name("signing.json").read_text()
    pki.add_signing_key(root, "CNSS")
    revoked = pki.PkiPaths(root).institution_dir("CNSS")
    (revoked / REVOKED_KEY_FILE).write_bytes(old_key)
    (revoked / "revoked-signing.json").write_text(old_meta)
    pki.revoke_key(root, "CNSS", first.kid)
    return root


def tls(creds: Credentials) -> grpc.ChannelCredentials:
    """mTLS as the SDK does it: the gateway's CA, the institution's certificate."""
    return grpc.ssl_channel_credentials(creds.ca_cert, creds.tls_key, creds.tls_cert)


def channel(target: str, creds: Credentials) -> grpc.Channel:
    return grpc.secure_channel(target, tls(creds))


def raw_call(
    target: str,
    creds: Credentials,
    method: str,
    body: bytes,
    tokens: Sequence[str],
    *,
    timeout: float = 30,
) -> tuple[bytes, grpc.Call]:
    """Call `method` with exactly the given bytes and signature metadata entries."""
    with channel(target, creds) as ch:
        stub = ch.unary_unary(f"/{SERVICE}/{method}")
        metadata = tuple((SIGNATURE_METADATA, t) for t in tokens)
        response, call = stub.with_call(body, timeout=timeout, metadata=metadata)
        return response, call
