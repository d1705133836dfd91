"""`jisr portal serve`: the reference citizen portal, its own process.

A portal institution (ANR in the shipped policy: the `citizen_portal` role) runs it with
its own credentials (`jisr pki issue ANR` in its PKI directory). This reference signs
citizens in only with `--dev-login` (a well-formed IDCS is taken as proved): a real
portal puts its identity check there (docs/citizen-portal.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.base import logs
from gateway.cli.console import (
    CONSOLE_EXTRA_PIP,
    add_web_client_flags,
    bind_socket,
    is_loopback,
    serve_until_stopped,
)

DEFAULT_LISTEN = "127.0.0.1:8081"


def add_parser(sub: Any) -> None:
    portal = sub.add_parser("portal", help="the reference citizen portal")
    actions = portal.add_subparsers(dest="action", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve the portal",
        description="Serve the citizen portal over HTTP (put TLS in front of it anywhere\n"
        "but loopback). It asks the gateway for citizens' access reports with the\n"
        "portal institution's credentials.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_web_client_flags(serve, DEFAULT_LISTEN)
    serve.add_argument(
        "--institution", default="ANR", help="the portal institution (default: %(default)s)"
    )
    serve.add_argument(
        "--dev-login",
        action="store_true",
        help="DEVELOPMENT: sign a citizen in on a well-formed IDCS alone (required: this"
        " reference has no other sign-in)",
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    logs.setup()  # every logger as JSON lines, JISR_LOG_LEVEL
    if not args.dev_login:
        print(
            "jisr portal serve: --dev-login: required; this reference portal signs citizens"
            " in only for development (docs/citizen-portal.md says what a real one does)",
            file=sys.stderr,
        )
        return 2
    try:
        import uvicorn

        from gateway.console.link import GatewayLink
        from gateway.portal.app import create_app
    except ModuleNotFoundError as exc:
        print(
            f"jisr portal serve: the portal's dependencies are not installed (no module"
            f" {exc.name!r}); install them with: {CONSOLE_EXTRA_PIP}",
            file=sys.stderr,
        )
        return 2
    link = GatewayLink(args.gateway, args.pki_dir, insecure_plaintext=args.insecure_plaintext)
    if not link.has_credentials(args.institution):
        print(
            f"jisr portal serve: --institution: no credentials of {args.institution} in"
            f" {args.pki_dir} (jisr pki --dir {args.pki_dir} issue {args.institution})",
            file=sys.stderr,
        )
        return 2
    host = args.listen.rpartition(":")[0].strip("[]")
    try:
        sock = bind_socket(args.listen)
        bound_host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            create_app(link, args.institution, secure_cookies=not is_loopback(host)),
            log_config=None,  # our JSON lines (gateway/base/logs.py), not uvicorn's own
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )
        print(
            f"jisr portal: serving on {bound_host}:{port} (http://{bound_host}:{port}/),"
            f" gateway {args.gateway}, as {args.institution}; DEVELOPMENT sign-in",
            flush=True,
        )
        serve_until_stopped(uvicorn.Server(config), sock)
    finally:
        link.close()
    return 0
