"""`jisr transparency publish --month 2026-11 --out DIR` and `jisr transparency verify
DIR`: a month's indicators, under disclosure control, signed by the gateway's key, and
their offline check (docs/transparency.md).

Publishing reads the gateway's stores (the audit trail read-only) from its configuration
(`--config`, `--data-dir`, JISR_STATE_DIR, JISR_DATABASE_URL) and signs with its receipt
key (`--pki-dir`). Exit status: 0 published / verified; 1 the publication does not verify
(each problem printed as FILE: what is wrong); 2 nothing done (a bad argument, no trail,
no key, the output directory exists). Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from adapters.registry_db import REGISTRY_FILE, Registry
from consent.store import open_store
from gateway.audit.recorder import KEY_FILE
from gateway.audit.store import AuditSchemaTooOldError, AuditTrailMissingError, open_audit_store
from gateway.cli.audit import store_config
from gateway.config import Config, ConfigError
from gateway.contests.store import open_contest_store
from gateway.events.store import open_event_store
from gateway.pipeline import programmes
from gateway.security import pki
from gateway.transparency import disclosure, publication, sources
from gateway.transparency.publication import Method

EXIT_DONE = 0
EXIT_INVALID = 1
EXIT_NOT_DONE = 2

_PUBLISH_EPILOG = """exit status:
  0  published: the directory holds the CSV and JSON files and their signed manifest
  2  nothing published: bad month or threshold, no audit trail, no key, --out exists"""
_VERIFY_EPILOG = """exit status:
  0  the signature and every file verify
  1  a problem, each printed as FILE: what is wrong
  2  nothing checked: no such directory, no keys"""


def add_parser(sub: Any) -> None:
    top = sub.add_parser(
        "transparency",
        help="publish a month's indicators under disclosure control, and verify one",
        description="Privacy-safe indicators for the observatory, signed by the gateway.",
    )
    actions = top.add_subparsers(dest="action", required=True)
    publish = actions.add_parser(
        "publish",
        help="count a month from the stores, protect the counts, sign and write them",
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("--month", required=True, help="the month, YYYY-MM (UTC)")
    publish.add_argument("--out", type=Path, required=True, help="directory to create")
    publish.add_argument(
        "--threshold",
        type=int,
        default=disclosure.DEFAULT_THRESHOLD,
        help="counts below it are suppressed (default %(default)s, at least 3)",
    )
    publish.add_argument("--config", type=Path, help="gateway TOML (for the stores)")
    publish.add_argument("--data-dir", type=Path, help="the gateway's data directory")
    publish.add_argument("--pki-dir", type=Path, help="the gateway's keys (default var/pki)")
    publish.set_defaults(run=run_publish)
    verify = actions.add_parser(
        "verify",
        help="check a publication offline against the gateway's public keys",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("folder", type=Path, help="the publication's directory")
    verify.add_argument(
        "--jwks", type=Path, required=True, help="the gateway's keys (`jisr keys export`)"
    )
    verify.set_defaults(run=run_verify)


def _fail(message: str) -> int:
    print(f"jisr transparency: {message}", file=sys.stderr)
    return EXIT_NOT_DONE


def run_publish(args: argparse.Namespace) -> int:
    try:
        month = sources.month_of(args.month)
        threshold = disclosure.check_threshold(args.threshold)
        config = store_config(args)
    except (ValueError, ConfigError) as exc:
        return _fail(f"--month/--threshold/--config: {exc}")
    if args.out.exists():
        return _fail(f"{args.out}: exists; a publication goes to a new directory")
    try:
        key, kid = pki.load_gateway_signing_key(config.pki_dir)
    except (OSError, ValueError) as exc:
        return _fail(f"{config.pki_dir}: no gateway signing key ({type(exc).__name__})")
    state = config.state_dir or config.data_dir
    with ExitStack() as stack:
        try:
            audit = open_audit_store(config.database_url, state, read_only=True)
        except (AuditTrailMissingError, AuditSchemaTooOldError) as exc:
            return _fail(str(exc))
        stack.callback(audit.close)
        contests = open_contest_store(config.database_url, state)
        stack.callback(contests.close)
        events = open_event_store(config.database_url, state)
        stack.callback(events.close)
        consents = open_store(config.database_url, state)
        stack.callback(consents.close)
        stores = sources.Stores(audit, consents, contests, events)
        found = sources.read(month, stores, _registry_view(config, stack), _progress)
    tables = [disclosure.protect(c, threshold) for c in found.counts]
    medians = [disclosure.protect_durations(d, threshold) for d in found.durations]
    now = dt.datetime.now(dt.UTC)
    files = publication.contents(month.label, now, Method(threshold), tables, medians)
    publication.write(args.out, month.label, files, key=key, kid=kid, now=now)
    cells = sum(len(t.cells) for t in tables)
    hidden = sum(t.suppressed for t in tables)
    print(
        f"published {month.label} in {args.out}: {len(tables)} tables, {cells:,} cells"
        f" ({hidden:,} suppressed below {threshold}), signed by key {kid}"
    )
    return EXIT_DONE


def _registry_view(config: Config, stack: ExitStack) -> sources.RegistryView | None:
    """The embedded registry, its programmes and the audit key, if the gateway has one
    (a gateway reaching every institution remotely has none: the registry tables are
    then empty)."""
    path = config.data_dir / REGISTRY_FILE
    key_file = config.pki_dir / KEY_FILE
    if not path.is_file() or not key_file.is_file():
        return None
    registry = Registry(path)
    stack.callback(registry.close)
    catalogue = (
        programmes.load(config.programmes) if config.programmes else programmes.load_default()
    )
    return sources.RegistryView(registry, key_file.read_bytes(), catalogue)


def _progress(message: str) -> None:
    print(f"jisr transparency: {message}", file=sys.stderr)


def run_verify(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        print(f"jisr transparency verify: {args.folder}: no such directory", file=sys.stderr)
        return EXIT_NOT_DONE
    try:
        jwks = json.loads(args.jwks.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"jisr transparency verify: {args.jwks}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_NOT_DONE
    name = args.folder.resolve().name
    month = name if publication.MONTH.fullmatch(name) else None  # a folder named for a month
    problems = publication.verify(args.folder, jwks, month)
    for problem in problems:
        print(f"{args.folder / problem}", file=sys.stderr)
    if problems:
        return EXIT_INVALID
    print(f"{args.folder}: the signature and every file verify")
    return EXIT_DONE
