"""`jisr dci`: the DCI facade (docs/dci.md): serve it, add its OAuth2 clients, and sign an
envelope the way a partner's system does (for trying it with curl)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.cli.console import bind_socket, is_loopback, serve_until_stopped
from gateway.security import pki

DEFAULT_LISTEN = "127.0.0.1:8090"
DCI_EXTRA_PIP = "pip install 'jisr[dci]'"


def add_parser(sub: Any) -> None:
    dci = sub.add_parser("dci", help="the DCI social-registry REST facade")
    actions = dci.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve the DCI facade (HTTP, its own process)")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="host:port (%(default)s)")
    serve.add_argument("--config", type=Path, help="gateway TOML (default: built-in)")
    serve.add_argument("--data-dir", type=Path, help="registry directory")
    serve.add_argument("--pki-dir", type=Path, help="PKI directory (jisr pki init)")
    serve.add_argument("--clients", type=Path, help="OAuth2 clients file (jisr dci client add)")
    serve.add_argument(
        "--token-seconds", type=int, default=300, help="bearer token lifetime (%(default)s)"
    )
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    serve.add_argument("--tls-key", type=Path, help="its PEM private key")
    serve.add_argument(
        "--behind-tls-proxy",
        action="store_true",
        help="serve plain HTTP on a non-loopback address: only behind a TLS terminator",
    )
    serve.add_argument(
        "--conformance-client",
        metavar="CLIENT_ID",
        help="TESTING ONLY, loopback only: accept unsigned envelopes from this client"
        " (the DCI compliance suite cannot sign); its bearer token is still required",
    )
    serve.set_defaults(run=_serve)
    client = actions.add_parser("client", help="OAuth2 clients of the facade")
    client_actions = client.add_subparsers(dest="client_action", required=True)
    add = client_actions.add_parser("add", help="add a client; prints its secret once")
    add.add_argument("client_id", help="3 to 64 of a-z 0-9 . _ -")
    add.add_argument("--institution", required=True, help="the institution it speaks for")
    add.add_argument("--clients", type=Path, help="clients file (default: in the state dir)")
    add.add_argument(
        "--callback",
        action="append",
        default=[],
        metavar="URL_PREFIX",
        help="where its asynchronous answers may go (repeatable), e.g."
        " https://spmis.example.ma/dci/",
    )
    add.add_argument("--data-dir", type=Path, default=Path("var"), help="(default: %(default)s)")
    add.set_defaults(run=_client_add)
    sign = actions.add_parser("sign", help="sign a {header, message} envelope as a partner")
    sign.add_argument("envelope", type=Path, help="JSON file with header and message")
    sign.add_argument("--institution", required=True, help="whose key signs (its PKI files)")
    sign.add_argument("--pki-dir", type=Path, default=Path("var/pki"), help="(%(default)s)")
    sign.add_argument(
        "--fresh",
        action="store_true",
        help="first give the envelope a new message_id, message_ts and transaction_id"
        " (a message_id is used once: the facade rejects it again as a replay)",
    )
    sign.set_defaults(run=_sign)


def _clients_file(args: argparse.Namespace, state: Path | None) -> Path:
    if args.clients is not None:
        return Path(args.clients)
    base = state or Path(os.environ.get("JISR_STATE_DIR") or args.data_dir or "var")
    return base / "dci-clients.json"


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from gateway import config as config_mod
        from gateway.dci.app import create_app
        from gateway.server import start_dci
        from gateway.telemetry import setup as telemetry
    except ModuleNotFoundError as exc:
        print(
            f"jisr dci serve: the facade's dependencies are not installed (no module"
            f" {exc.name!r}); install them with: {DCI_EXTRA_PIP}",
            file=sys.stderr,
        )
        return 2
    if not 60 <= args.token_seconds <= 86_400:
        print("jisr dci serve: --token-seconds must be 60 to 86400", file=sys.stderr)
        return 2
    host = args.listen.rpartition(":")[0].strip("[]")
    if args.conformance_client and not is_loopback(host):
        print("jisr dci serve: --conformance-client is refused outside loopback", file=sys.stderr)
        return 2
    refused = _transport_refusal(args, host)
    if refused:
        print(f"jisr dci serve: {refused}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.data_dir:
        env["JISR_DATA_DIR"] = str(args.data_dir)
    if args.pki_dir:
        env["JISR_PKI_DIR"] = str(args.pki_dir)
    config = config_mod.load(args.config, env)
    telemetry.setup_logging()
    clients_file = _clients_file(args, config.state_dir or config.data_dir)
    facade, closers = start_dci(
        config,
        clients_file,
        conformance_client=args.conformance_client,
        token_seconds=args.token_seconds,
    )
    sock = bind_socket(args.listen)
    port = sock.getsockname()[1]
    if args.conformance_client:
        print(
            f"jisr dci: WARNING: CONFORMANCE MODE: unsigned envelopes from client"
            f" {args.conformance_client} are accepted; never in production",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(facade),
            log_config=None,  # our JSON lines (gateway/base/logs.py), not uvicorn's own
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
        )
    )
    scheme = "https" if args.tls_cert else "http"
    print(
        f"jisr dci: serving the DCI social registry on {host}:{port} ({scheme}://{host}:{port}/)"
        f" ({len(facade.clients)} client(s) in {clients_file})",
        flush=True,
    )
    try:
        serve_until_stopped(server, sock)
    finally:
        for closer in closers:
            closer.close()
    return 0


def _transport_refusal(args: argparse.Namespace, host: str) -> str | None:
    """Why the transport asked for is refused, if it is: bearer tokens and registry records
    cross it, so plain HTTP is served on loopback, or elsewhere only when the operator says
    a TLS terminator stands in front (docs/dci.md, "Transport")."""
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not Path(path).is_file():
            return f"{option} {path}: no such file"
    if args.tls_cert is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.tls_cert, args.tls_key
            )
        except (ssl.SSLError, OSError) as exc:
            return f"--tls-cert {args.tls_cert} / --tls-key {args.tls_key}: {exc.strerror or exc}"
    if args.tls_cert is None and not is_loopback(host) and not args.behind_tls_proxy:
        return (
            f"plain HTTP on {host} would carry bearer tokens and records in clear: give"
            " --tls-cert and --tls-key, or --behind-tls-proxy if a TLS terminator is in front"
        )
    return None


def _client_add(args: argparse.Namespace) -> int:
    from gateway.dci.clients import ClientsError, add

    path = _clients_file(args, None)
    try:
        secret = add(path, args.client_id, args.institution, args.callback)
    except ClientsError as exc:
        print(f"jisr dci client add: {exc}", file=sys.stderr)
        return 2
    print(
        f"jisr dci: client {args.client_id} added for {args.institution} in {path}", file=sys.stderr
    )
    print(secret)
    return 0


def _sign(args: argparse.Namespace) -> int:
    from gateway.dci import signature

    try:
        envelope = json.loads(args.envelope.read_text(encoding="utf-8"))
        files = pki.load_institution(args.pki_dir, args.institution)
        key = load_pem_private_key(files.signing_key.read_bytes(), None)
    except (OSError, ValueError, RecursionError) as exc:
        print(f"jisr dci sign: {exc}", file=sys.stderr)
        return 2
    if not isinstance(envelope, dict) or not {"header", "message"} <= set(envelope):
        print(f"jisr dci sign: {args.envelope}: needs header and message", file=sys.stderr)
        return 2
    assert isinstance(key, EllipticCurvePrivateKey | Ed25519PrivateKey)
    if args.fresh:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        envelope["header"] |= {"message_id": uuid.uuid4().hex, "message_ts": now}
        if isinstance(envelope["message"], dict):
            envelope["message"]["transaction_id"] = uuid.uuid4().hex
    envelope["signature"] = signature.sign(
        envelope["header"],
        envelope["message"],
        sender_id=args.institution,
        kid=files.kid,
        key=key,
        created=int(time.time()),
    )
    print(json.dumps(envelope))
    return 0
