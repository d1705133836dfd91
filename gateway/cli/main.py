"""The `jisr` command: serve, generate demo data, run a ministry backend, make calls."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.base.wire import GATEWAY_CLIENT
from gateway.cli import audit as audit_cli
from gateway.cli import console as console_cli
from gateway.cli import dci as dci_cli
from gateway.cli import portal as portal_cli
from gateway.cli import registry as registry_cli
from gateway.cli import serve as serve_cli
from gateway.cli import transparency as transparency_cli
from gateway.cli.support import SAMPLES, call, consent, demo_data, samples
from gateway.security import pki, receipts

if TYPE_CHECKING:
    pass

# The server's modules are imported by the commands that run it (serve, backend, pki init),
# never at start-up: `jisr call`, `consent`, `keys` and `receipt` are a partner's, and work
# with the SDK's dependencies alone (`pip install jisr`, without the `server` extra).
# The top-level packages the `server` extra installs (pyproject.toml):
SERVER_EXTRA = (
    "opentelemetry",
    "prometheus_client",
    "psycopg",
    "psycopg_pool",
    "grpc_health",
    "grpc_reflection",
)
SERVER_EXTRA_PIP = "pip install 'jisr[server]'"
# Errors that are the user's input or configuration (exit 2), by defining module: each
# module is looked up only when it was imported, as only then can its error be raised.
USAGE_ERRORS = (
    ("gateway.config", "ConfigError"),
    ("gateway.pipeline.programmes", "ProgrammeConfigError"),
    ("adapters.registry_db", "RegistryError"),
    ("gateway.pipeline.registries", "MissingInstitutionError"),
    ("gateway.security.trust", "TrustStoreError"),
    ("gateway.security.policy", "PolicyError"),
)


class ServerMissingError(Exception):
    """A command that runs the server, in an install without the `server` extra."""


@contextlib.contextmanager
def _server_extra() -> Iterator[None]:
    """Around a command: a module of the `server` extra that is not installed (the commands
    that run the server import it when they start) becomes a ServerMissingError that says
    how to install it, in one line; any other missing module is a bug, raised as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_EXTRA:
            raise
        raise ServerMissingError(
            f"the server's dependencies are not installed (no module {exc.name!r});"
            f" install them with: {SERVER_EXTRA_PIP}"
        ) from None


def _usage_errors() -> tuple[type[Exception], ...]:
    """The USAGE_ERRORS this run can have raised: those of the modules it imported.
    Importing the others here would load the server's modules, or fail without them."""
    found: list[type[Exception]] = []
    for module, name in USAGE_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


DEFAULT_PKI = Path("var/pki")
DATA_DIR = Path("var")
DEFAULT_TARGET = "127.0.0.1:50051"
_PKI_DIR_HELP = "PKI directory, as `jisr pki init` made it (default: %(default)s)"
_DATA_DIR_HELP = "registry directory, as `jisr demo-data` made it (default: %(default)s)"
_TARGET_HELP = "the gateway's host:port (default: %(default)s)"
_RECEIPT_HELP = "also print each receipt's signed JWS on stdout (before or after the method)"
_PROGRAMME_HELP = "programme code, e.g. AMOT or ASD (`jisr programmes check` lists them)"
_METHOD_HELP = "how it was collected (default: %(default)s)"


def _demo_data(args: argparse.Namespace) -> int:
    if args.changes is not None:
        return _demo_changes(args)
    if args.month is not None or args.count is not None:
        print("jisr demo-data: --month and --count need --changes FILE", file=sys.stderr)
        return 2
    households = 10_000 if args.households is None else args.households
    return demo_data(args.data_dir, households, args.seed, force=args.force)


def _demo_changes(args: argparse.Namespace) -> int:
    """A month of SYNTHETIC changes for the registry of --data-dir (adapters/demo_changes.py);
    the summary goes to stderr when the lines go to stdout."""
    from adapters.demo_changes import DemoChangesError, generate_changes
    from adapters.registry_db import REGISTRY_FILE

    if args.households is not None or args.force:
        print(
            "jisr demo-data: --changes reads the registry of --data-dir;"
            " --households and --force are for making one",
            file=sys.stderr,
        )
        return 2
    to_stdout = str(args.changes) == "-"
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            said = "registry read, writing" if done == 0 else f"{done:,} of"
            print(f"jisr demo-data: {said} ~{total:,} changes", file=sys.stderr, flush=True)

    try:
        summary = generate_changes(
            args.data_dir / REGISTRY_FILE,
            sys.stdout if to_stdout else args.changes,
            month=args.month,
            seed=args.seed,
            count=args.count,
            progress=progress,
        )
    except DemoChangesError as exc:
        print(f"jisr demo-data: {exc}", file=sys.stderr)
        return 2
    given = f"; {summary.substituted:,} given to rescorings (the registry is small for --count)"
    print(
        f"jisr demo-data: SYNTHETIC changes for {summary.month} written to"
        f" {'stdout' if to_stdout else args.changes}:"
        f" {summary.lines:,} lines ({summary.line()}){given if summary.substituted else ''};"
        f" seed {args.seed}, {summary.seconds:.1f} s",
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 0


def _backend(args: argparse.Namespace) -> int:
    from adapters.registry_db import REGISTRY_FILE, Registry
    from gateway import config as config_mod
    from gateway.server import run_until_signalled, start_backend
    from gateway.telemetry import setup as telemetry

    names = [n.strip().upper() for n in args.institutions.split(",") if n.strip()]
    unknown = [n for n in names if n not in config_mod.INSTITUTIONS]
    if unknown or not names:
        print(
            f"jisr backend: --institutions: unknown {unknown}; known:"
            f" {', '.join(config_mod.INSTITUTIONS)}",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ)
    env["JISR_PKI_DIR"] = str(args.pki_dir)
    if args.insecure_plaintext:
        env["JISR_INSECURE_PLAINTEXT"] = "1"
    config = config_mod.load(None, env)
    telemetry.setup_logging()
    traces = telemetry.setup_tracing("jisr-ministry-backend")
    running = start_backend(names, Registry(args.data_dir / REGISTRY_FILE), args.listen, config)
    host = args.listen.rsplit(":", 1)[0]
    run_until_signalled(
        running,
        5.0,
        f"jisr: MinistryBackend for {','.join(names)} on {host}:{running.port}"
        f" ({serve_cli.transport(config)})",
    )
    if traces is not None:
        traces.shutdown()
    return 0


def _programmes_check(args: argparse.Namespace) -> int:
    from gateway.pipeline import programmes

    catalogue = programmes.load(args.file) if args.file else programmes.load_default()
    for programme in catalogue.programmes.values():
        versions = ", ".join(
            f"{t.version} ({t.value} from {t.effective_from})" for t in programme.thresholds
        )
        print(f"{programme.code}: {programme.name}; run by {programme.operator}; {versions}")
    print(f"{catalogue.source}: {len(catalogue.programmes)} programmes, valid")
    return 0


def _pki(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if args.action == "init":
        pki.init(root, gateway_id=args.gateway_id, force=args.force)
        pki.issue(root, GATEWAY_CLIENT)
        print(f"jisr pki: CA, server certificate and receipt key in {root}")
    elif args.action == "issue":
        files = pki.issue(root, args.institution, alg=args.alg)
        print(f"jisr pki: {files.institution}: certificate {files.tls_cert}, key {files.kid}")
    elif args.action == "rotate":
        files = pki.add_signing_key(root, args.institution, alg=args.alg)
        print(f"jisr pki: {files.institution}: new signing key {files.kid} (old keys stay)")
    else:
        pki.revoke_key(root, args.institution, args.kid)
        print(f"jisr pki: {args.institution}: key {args.kid} revoked (restart the gateway)")
    return 0


def _keys_export(args: argparse.Namespace) -> int:
    print(json.dumps(pki.gateway_jwks(args.dir), indent=2))
    return 0


def _receipt_verify(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.receipt == "-" else args.receipt
    jwks = receipts.load_jwks(args.jwks.read_text(encoding="utf-8"))
    try:
        claims = receipts.verify(text.strip(), jwks)
    except receipts.ReceiptError as exc:
        print(f"jisr receipt: INVALID: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2, ensure_ascii=False))
    print("jisr receipt: valid", file=sys.stderr)
    return 0


def _call(args: argparse.Namespace) -> int:
    return call(args)


def _pki_parsers(sub: Any) -> None:
    pki_cmd = sub.add_parser("pki", help="certificates and signing keys")
    pki_cmd.add_argument("--dir", type=Path, default=DEFAULT_PKI, help="PKI directory")
    pki_sub = pki_cmd.add_subparsers(dest="action", required=True)
    init = pki_sub.add_parser("init", help="create the CA, server certificate and receipt key")
    init.add_argument(
        "--gateway-id",
        default=pki.DEFAULT_GATEWAY_ID,
        help="the audience (aud) callers' tokens name (default: %(default)s)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    for action, text in (
        ("issue", "issue an institution's certificate and signing key"),
        ("rotate", "add a new signing key (old ones stay trusted)"),
    ):
        cmd = pki_sub.add_parser(action, help=text)
        cmd.add_argument("institution", help="institution id, e.g. CNSS")
        cmd.add_argument(
            "--alg",
            choices=sorted(pki.ALGORITHMS),
            default="ES256",
            help="signing key algorithm (default: %(default)s)",
        )
    revoke = pki_sub.add_parser("revoke", help="revoke one of an institution's signing keys")
    revoke.add_argument("institution", help="institution id, e.g. CNSS")
    revoke.add_argument("kid", help="the key id `jisr pki issue` or `rotate` printed")
    pki_cmd.set_defaults(run=_pki)

    keys = sub.add_parser("keys", help="the gateway's public keys")
    keys.add_argument("--dir", type=Path, default=DEFAULT_PKI, help="PKI directory")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    export = keys_sub.add_parser("export", help="print the receipt-verification JWKS")
    export.set_defaults(run=_keys_export)

    receipt = sub.add_parser("receipt", help="gateway receipts")
    receipt_sub = receipt.add_subparsers(dest="action", required=True)
    verify = receipt_sub.add_parser("verify", help="verify a receipt offline")
    verify.add_argument("receipt", help="the compact JWS, or - for stdin")
    verify.add_argument("--jwks", type=Path, required=True, help="from `jisr keys export`")
    verify.set_defaults(run=_receipt_verify)


def _data_parsers(sub: Any) -> None:
    demo = sub.add_parser("demo-data", help="generate a synthetic registry, or a month of changes")
    demo.add_argument("--households", type=int, help="how many households (default: 10000)")
    demo.add_argument(
        "--seed", type=int, default=1, help="same seed, same data (default: %(default)s)"
    )
    demo.add_argument("--data-dir", type=Path, default=DATA_DIR, help=_DATA_DIR_HELP)
    demo.add_argument("--force", action="store_true", help="replace an existing registry")
    demo.add_argument(
        "--changes",
        type=Path,
        metavar="FILE",
        help="instead, write a month of changes for the registry of --data-dir (- for stdout)",
    )
    demo.add_argument(
        "--month",
        metavar="YYYY-MM",
        help="with --changes: the month (default: the one after the registry's latest date)",
    )
    demo.add_argument(
        "--count", type=int, metavar="N", help="with --changes: about N lines (rates scaled)"
    )
    demo.set_defaults(run=_demo_data)

    backend = sub.add_parser("backend", help="run a ministry's MinistryBackend")
    backend_sub = backend.add_subparsers(dest="action", required=True)
    backend_serve = backend_sub.add_parser("serve", help="serve institutions' records")
    backend_serve.add_argument("--institutions", required=True, help="e.g. CNSS or RNP,RSU")
    backend_serve.add_argument("--data-dir", type=Path, default=DATA_DIR, help=_DATA_DIR_HELP)
    backend_serve.add_argument(
        "--listen", default="127.0.0.1:50061", help="host:port (default: %(default)s)"
    )
    backend_serve.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI, help=_PKI_DIR_HELP)
    backend_serve.add_argument(
        "--insecure-plaintext", action="store_true", help="UNSAFE, development only: no TLS"
    )
    backend_serve.set_defaults(run=_backend)

    sample = sub.add_parser("samples", help="example subjects from the synthetic registry")
    sample.add_argument("--data-dir", type=Path, default=DATA_DIR, help=_DATA_DIR_HELP)
    sample.add_argument("--kind", choices=sorted(SAMPLES), help="print only this one's value")
    sample.set_defaults(run=lambda a: samples(a.data_dir, a.kind))

    progs = sub.add_parser("programmes", help="programme definitions")
    progs_sub = progs.add_subparsers(dest="action", required=True)
    check = progs_sub.add_parser("check", help="validate a programmes file")
    check.add_argument(
        "file", type=Path, nargs="?", help="programmes TOML (default: the shipped one)"
    )
    check.set_defaults(run=_programmes_check)


def _call_parser(sub: Any) -> None:
    call = sub.add_parser("call", help="make one call to a gateway")
    call.add_argument("--target", default=DEFAULT_TARGET, help=_TARGET_HELP)
    call.add_argument("--purpose", required=True, help="purpose code, e.g. AMO_ENROLMENT")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds (default: %(default)s)")
    call.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI, help=_PKI_DIR_HELP)
    call.add_argument("--institution", default="DEMO", help="whose credentials to use")
    call.add_argument("--insecure-plaintext", action="store_true", help="UNSAFE: no TLS")
    call.add_argument("--receipt", action="store_true", help=_RECEIPT_HELP)
    # `--receipt` is also accepted after the method (docs write it there); SUPPRESS keeps
    # a method parser from resetting a `--receipt` given before the method.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument(
        "--receipt", action="store_true", default=argparse.SUPPRESS, help=_RECEIPT_HELP
    )
    what = call.add_subparsers(dest="method", required=True)
    person = what.add_parser("person", help="GetPersonStatus", parents=[after])
    person.add_argument("idcs", help="the person's IDCS (10 digits)")
    household = what.add_parser("household", help="GetHouseholdStatus", parents=[after])
    household.add_argument("subject", help="household id (H...) or member IDCS")
    eligibility = what.add_parser("eligibility", help="VerifyEligibility", parents=[after])
    eligibility.add_argument("subject", help="household id (H...) or IDCS")
    eligibility.add_argument("--programme", required=True, help=_PROGRAMME_HELP)
    eligibility.add_argument("--as-of", help="YYYY-MM-DD (default: today)")
    batch = what.add_parser("batch", help="VerifyEligibilityBatch from a file", parents=[after])
    batch.add_argument("file", type=Path, help="one subject per line ('-' for stdin)")
    batch.add_argument("--programme", required=True, help=_PROGRAMME_HELP)
    batch.add_argument("--as-of", help="YYYY-MM-DD (default: today)")
    batch.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="subjects per signed batch, 1 to 1000 (default: %(default)s)",
    )
    call.set_defaults(run=_call)


def _consent_parser(sub: Any) -> None:
    cmd = sub.add_parser("consent", help="citizens' consents (consent collectors)")
    cmd.add_argument("--target", default=DEFAULT_TARGET, help=_TARGET_HELP)
    cmd.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI, help=_PKI_DIR_HELP)
    cmd.add_argument("--institution", default="DEMO", help="the collecting institution")
    cmd.add_argument("--insecure-plaintext", action="store_true", help="UNSAFE: no TLS")
    actions = cmd.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="record a consent collected at the counter")
    grant.add_argument("subject", help="household id (H...) or a person's IDCS")
    grant.add_argument("--grantor", required=True, help="IDCS of the declarant or person")
    grant.add_argument("--grantee", required=True, help="institution that may receive data")
    grant.add_argument("--purposes", required=True, help="comma-separated purpose codes")
    grant.add_argument("--scopes", required=True, help="comma-separated field groups")
    grant.add_argument("--days", type=int, default=365, help="validity from now")
    grant.add_argument("--max-uses", type=int, default=0, help="use cap per period (0: none)")
    grant.add_argument(
        "--period-days", type=int, default=30, help="the use cap's period (default: %(default)s)"
    )
    grant.add_argument("--method", default="counter", help=_METHOD_HELP)
    revoke = actions.add_parser("revoke", help="revoke a consent at once")
    revoke.add_argument("consent_id", help="as `grant` or `list` printed it")
    revoke.add_argument("--grantor", required=True, help="IDCS of who granted it")
    revoke.add_argument("--method", default="counter", help=_METHOD_HELP)
    listing = actions.add_parser("list", help="consents about a subject")
    listing.add_argument("subject", help="household id (H...) or a person's IDCS")
    show = actions.add_parser("show", help="one consent")
    show.add_argument("consent_id", help="as `grant` or `list` printed it")
    show.add_argument("--history", action="store_true", help="every revision, verified")
    cmd.set_defaults(run=consent)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jisr", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for add in (
        serve_cli.add_parser,
        _pki_parsers,
        _data_parsers,
        _call_parser,
        _consent_parser,
        audit_cli.add_parser,
        console_cli.add_parser,
        dci_cli.add_parser,
        portal_cli.add_parser,
        registry_cli.add_parser,
        transparency_cli.add_parser,
    ):
        add(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with _server_extra():
            code: int = args.run(args)
    except _usage_errors() as exc:  # evaluated only when an exception arrives here
        print(f"jisr: {exc}", file=sys.stderr)
        return 2
    except ServerMissingError as exc:
        print(f"jisr {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"jisr: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
