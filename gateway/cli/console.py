"""`jisr console serve` (the DPO and regulator console, its own process) and
`jisr console user ...` (its local accounts).

The console is a client of a running gateway: it needs the credentials of each
institution whose officers use it (`jisr pki issue INSTITUTION` in its PKI directory), a
state directory (or JISR_DATABASE_URL) for its accounts and sessions, and nothing of the
gateway's own state.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gateway.base import logs

CONSOLE_EXTRA_PIP = "pip install 'jisr[console]'"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_GATEWAY = "127.0.0.1:50051"
# The development logins `--dev-accounts` makes (their passwords new at each start).
DEV_ACCOUNTS = (("dpo-demo", "DEMO", "DPO of DEMO"), ("cndp", "CNDP", "the regulator (CNDP)"))


def add_parser(sub: Any) -> None:
    console = sub.add_parser("console", help="the DPO and regulator web console")
    actions = console.add_subparsers(dest="action", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve the console",
        description="Serve the console over HTTP (put TLS in front of it anywhere but\n"
        "loopback). It calls the gateway with the credentials of each officer's\n"
        "institution, naming the officer by a pseudonymous id.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_web_client_flags(serve, DEFAULT_LISTEN)
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("JISR_STATE_DIR") or "var"),
        help="where console.sqlite lives, unless JISR_DATABASE_URL is set (default: %(default)s)",
    )
    serve.add_argument(
        "--dev-accounts",
        action="store_true",
        help="DEVELOPMENT: make the accounts dpo-demo (DEMO) and cndp (CNDP) with new"
        " passwords, printed at start",
    )
    serve.add_argument(
        "--oidc-config",
        type=Path,
        metavar="FILE",
        help="sign-in through identity providers (OpenID Connect): a TOML file naming each"
        " provider, its client and the institution it signs in (docs/console.md)",
    )
    serve.add_argument(
        "--publications",
        type=Path,
        default=Path("var/publications"),
        metavar="DIR",
        help="the transparency publications shown on the public page /transparency, one"
        " directory per month as `jisr transparency publish` writes (default: %(default)s)",
    )
    serve.add_argument(
        "--secure-cookies",
        choices=("auto", "yes", "no"),
        default="auto",
        help="Secure session cookies (auto: yes unless listening on loopback)",
    )
    serve.set_defaults(run=_serve)
    try:
        from gateway.cli.console_users import add_user_parsers
    except ModuleNotFoundError:  # pragma: no cover - the console extra is missing
        return
    add_user_parsers(actions)


def add_web_client_flags(serve: argparse.ArgumentParser, listen: str) -> None:
    """The flags of a web app that is a client of the gateway (the console, the portal):
    where it listens, which gateway it calls, with which PKI, and the unsafe plaintext."""
    serve.add_argument("--listen", default=listen, help="host:port (default: %(default)s)")
    serve.add_argument(
        "--gateway", default=DEFAULT_GATEWAY, help="the gateway's host:port (default: %(default)s)"
    )
    serve.add_argument("--pki-dir", type=Path, default=Path("var/pki"), help="PKI directory")
    serve.add_argument(
        "--insecure-plaintext", action="store_true", help="UNSAFE: no TLS to the gateway"
    )


def serve_until_stopped(server: Any, sock: socket.socket) -> None:
    """Run a uvicorn server until SIGTERM or SIGINT, then exit normally. uvicorn shuts
    down gracefully and then raises the signal again to the handler found at start; ours
    turns SIGTERM into a normal exit (status 0, exit handlers run, as `jisr serve` does)
    rather than death by the signal."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    server.run(sockets=[sock])


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def bind_socket(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _serve(args: argparse.Namespace) -> int:
    logs.setup()  # every logger as JSON lines, JISR_LOG_LEVEL
    try:
        import uvicorn

        from gateway.console import accounts
        from gateway.console.app import create_app
        from gateway.console.link import GatewayLink
        from gateway.console.oidc import OidcConfigError, load_config
        from gateway.console.oidc_client import OidcLogins
        from gateway.console.store import open_console_store
    except ModuleNotFoundError as exc:
        print(
            f"jisr console serve: the console's dependencies are not installed (no module"
            f" {exc.name!r}); install them with: {CONSOLE_EXTRA_PIP}",
            file=sys.stderr,
        )
        return 2
    oidc = None
    if args.oidc_config is not None:
        try:
            oidc = OidcLogins(load_config(args.oidc_config))
        except OidcConfigError as exc:
            print(f"jisr console serve: {exc}", file=sys.stderr)
            return 2
    host = args.listen.rpartition(":")[0].strip("[]")
    secure = args.secure_cookies == "yes" or (
        args.secure_cookies == "auto" and not is_loopback(host)
    )
    store = open_console_store(os.environ.get("JISR_DATABASE_URL"), args.state_dir)
    link = GatewayLink(args.gateway, args.pki_dir, insecure_plaintext=args.insecure_plaintext)
    try:
        if args.dev_accounts:
            _dev_accounts(store, link, accounts)
        sock = bind_socket(args.listen)
        bound_host, port = sock.getsockname()[:2]
        for provider in oidc.buttons() if oidc is not None else []:
            print(
                f"jisr console: sign-in through {provider.id} ({provider.issuer}) for the"
                f" officers of {provider.institution}",
                flush=True,
            )
        config = uvicorn.Config(
            create_app(
                store, link, secure_cookies=secure, oidc=oidc, publications=args.publications
            ),
            log_config=None,  # our JSON lines (gateway/base/logs.py), not uvicorn's own
            log_level="warning",
            access_log=False,  # URLs carry search filters (an IDCS): never logged
            server_header=False,
            proxy_headers=False,
        )
        print(
            f"jisr console: serving on {bound_host}:{port} (http://{bound_host}:{port}/),"
            f" gateway {args.gateway}",
            flush=True,
        )
        serve_until_stopped(uvicorn.Server(config), sock)
    finally:
        link.close()
        store.close()
    return 0


def _dev_accounts(store: Any, link: Any, accounts: Any) -> None:
    """Make (or reset) the development logins, for the institutions the PKI holds."""
    now = time.time_ns() // 1000
    for username, institution, label in DEV_ACCOUNTS:
        if not link.has_credentials(institution):
            print(
                f"jisr console: no credentials of {institution} in {link.pki_dir}"
                f" (jisr pki --dir {link.pki_dir} issue {institution}): no {username} login",
                flush=True,
            )
            continue
        password = _dev_password()
        existing = store.account(username)
        if existing is None:
            store.add_account(
                accounts.new_account(username, institution, password, totp=False, now_us=now)
            )
        else:
            reset = accounts.with_totp(accounts.with_password(existing, password), enabled=False)
            store.update_account(dataclasses.replace(reset, disabled=False))
            store.clear_failures(username)
            store.delete_sessions_of(username)
        print(f"jisr console: development login {username} / {password} ({label})", flush=True)


def _dev_password() -> str:
    """16 random URL-safe characters, with a digit and a hyphen so that the strength rule
    (two kinds of character) always holds."""
    return f"{secrets.token_urlsafe(12)}-{secrets.randbelow(10)}"
