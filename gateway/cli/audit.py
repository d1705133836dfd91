"""`jisr audit verify|export|prune`: a DPO's offline tools over the store or a bundle.

Exit status is what scripts and DPOs act on, so it never mixes outcomes: 0 the trail is
valid (or the export/prune was done), 1 the trail is ALTERED (integrity findings, printed),
2 nothing was checked or changed (no trail or bundle at the path, an unreadable file or
store, a bad argument, a prune not confirmed). Errors are one line naming the command and
the flag or path at fault, never a traceback.

Reading commands (verify, export) open the store read-only: a mistyped --data-dir or
database URL is an error naming where it looked, never a new empty trail that verifies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.audit import bundle, chain, witness
from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.store import (
    AuditSchemaTooOldError,
    AuditStore,
    AuditTrailMissingError,
    open_audit_store,
)
from gateway.audit.verify_store import VerifyProcessError, verify_store
from gateway.cli import audit_proof, trail
from gateway.config import Config
from gateway.config import load as load_config
from gateway.runtime import cpus
from gateway.sdk.client import Credentials
from gateway.security import pki
from gateway.storage.migrations import SchemaTooNewError

EXIT_VALID = 0
EXIT_ALTERED = 1
EXIT_NOT_CHECKED = 2  # also argparse's exit status for a usage error
# The shortest retention `prune` accepts: 0 would delete the whole trail but its last
# record per chain, which is never a retention period (docs/audit.md).
MIN_RETENTION_DAYS = 1

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WHOLE = re.compile(r"[0-9]+")

_EXIT_STATUS = """exit status:
  0  VALID: every chain and signed checkpoint checks out
  1  ALTERED: integrity findings, each printed with the record or file at fault
  2  nothing verified: no trail or bundle at the path, an unreadable store, bundle,
     --jwks or PKI file, or bad arguments"""
DEFAULT_PKI = Path("var/pki")
_AUDIT_STATUS = """verify, export and prune open the store on the gateway's machine; query and
report ask a running gateway with an institution's credentials.

exit status:
  0  VALID (verify), or done (export, prune, query, report)
  1  ALTERED: verify found integrity findings; or the gateway refused (query, report)
  2  nothing checked, written, deleted or asked: see each action's --help"""
_WITNESS_STATUS = """exit status:
  0  the bundle verifies; its new checkpoints are countersigned into the log
  1  the bundle does not verify, or contradicts a checkpoint witnessed before
  2  nothing done: no bundle, keys or credentials"""
_EXPORT_STATUS = """exit status:
  0  the bundle was written
  2  nothing written: a bad date or range, --out exists, no trail, an unreadable store"""
_PRUNE_STATUS = f"""Asks before deleting when run on a terminal; elsewhere pass --yes.
The shortest retention accepted is {MIN_RETENTION_DAYS} day.

exit status:
  0  pruned (a signed prune checkpoint records it)
  2  nothing deleted: bad --older-than-days, not confirmed, no trail, an unreadable store"""


class _RefusedError(Exception):
    """A one-line reason why the command did nothing (a flag or path is named in it)."""


def add_parser(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="verify, export, prune, query the audit trail; a citizen's access report",
        description="A DPO's tools over the audit trail: the live store, an exported bundle,"
        " or a running gateway's AuditTrail service.",
        epilog=_AUDIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("--config", type=Path, help="gateway TOML (for the stores)")
    audit.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="where audit.sqlite lives (default var)"
    )
    audit.add_argument(
        "--pki-dir",
        type=Path,
        metavar="DIR",
        help="the gateway's keys, or the caller's credentials for query and report"
        " (default var/pki)",
    )
    actions = audit.add_subparsers(dest="action", required=True)
    _verify_parser(actions)
    _witness_parser(actions)
    audit_proof.add_parser(actions)
    _export_parser(actions)
    _prune_parser(actions)
    trail.add_parsers(actions)
    audit.set_defaults(run=run)


def _verify_parser(actions: Any) -> None:
    verify = actions.add_parser(
        "verify",
        help="recompute the chains and check checkpoints",
        description="Verify the live store (read-only), or an exported bundle offline.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "bundle",
        type=Path,
        nargs="?",
        help="an exported bundle directory (offline); without it, the live store",
    )
    verify.add_argument(
        "--jwks",
        type=Path,
        help="the gateway's published keys (`jisr keys export`); default: the bundle's copy",
    )
    verify.add_argument(
        "--witness-log",
        type=Path,
        help="a witness's log (`jisr audit witness`): the bundle must agree with every"
        " checkpoint it countersigned",
    )
    verify.add_argument(
        "--witness-jwks",
        type=Path,
        help="the witness institution's public keys (with --witness-log)",
    )
    verify.add_argument(
        "--jobs",
        type=_jobs,
        default=0,
        help="processes verifying the live store's nodes side by side (default: the CPUs"
        " available)",
    )


def _witness_parser(actions: Any) -> None:
    witness = actions.add_parser(
        "witness",
        help="countersign a bundle's checkpoints as an outside witness (the observatory)",
        description="Verify an exported bundle against the gateway's published keys, then"
        " countersign its checkpoints with the witness institution's key into the witness's"
        " own log; refuse a checkpoint that contradicts one witnessed before"
        " (docs/audit-format.md, 'Witnessed checkpoints').",
        epilog=_WITNESS_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    witness.add_argument("bundle", type=Path, help="an exported bundle directory")
    witness.add_argument(
        "--jwks", type=Path, required=True, help="the gateway's published keys (`jisr keys export`)"
    )
    witness.add_argument(
        "--log", type=Path, required=True, help="the witness's log (JSON lines, appended to)"
    )
    witness.add_argument(
        "--institution",
        default="ONDH",
        help="the witness institution whose signing key --pki-dir holds (default %(default)s)",
    )


def _export_parser(actions: Any) -> None:
    export = actions.add_parser(
        "export",
        help="write a self-contained evidence bundle",
        description="Write the records of a range of days, anchored by a signed checkpoint.",
        epilog=_EXPORT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "--from", dest="since", required=True, metavar="DATE", help="first day, YYYY-MM-DD (UTC)"
    )
    export.add_argument(
        "--to",
        dest="until",
        required=True,
        metavar="DATE",
        help="last day, YYYY-MM-DD (UTC, inclusive; not before --from)",
    )
    export.add_argument(
        "--out", type=Path, required=True, help="the bundle directory to create (must not exist)"
    )


def _prune_parser(actions: Any) -> None:
    prune = actions.add_parser(
        "prune",
        help="drop records older than the retention period",
        description="Delete each chain's records older than the retention period.",
        epilog=_PRUNE_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument(
        "--older-than-days",
        required=True,
        metavar="DAYS",
        help=f"the retention period: a whole number of days, at least {MIN_RETENTION_DAYS}",
    )
    prune.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (scripts, cron)"
    )


def store_config(args: argparse.Namespace) -> Config:
    """The gateway's configuration as its store-reading commands take it: `--config`, the
    environment, then `--data-dir` and `--pki-dir` over both."""
    env: dict[str, str] = {}
    if args.data_dir:
        env["JISR_DATA_DIR"] = str(args.data_dir)
    if args.pki_dir:
        env["JISR_PKI_DIR"] = str(args.pki_dir)
    return load_config(args.config, {**os.environ, **env})


def _store(config: Config, *, read_only: bool) -> AuditStore:
    return open_audit_store(
        config.database_url, config.state_dir or config.data_dir, read_only=read_only
    )


def _where(config: Config) -> str:
    """The store's location for messages: a file path, or PostgreSQL host:port/database
    (never the URL itself, which may hold a password)."""
    if config.database_url:
        from gateway.storage.postgres import describe  # noqa: PLC0415 - loads the driver

        return describe(config.database_url)
    return str((config.state_dir or config.data_dir) / "audit.sqlite")


def _progress(label: str) -> Any:
    started = time.monotonic()
    last = [0.0]

    def show(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            rate = done / max(now - started, 1e-9)
            print(f"\r{label}: {done:,} records, {rate:,.0f}/s", end="", file=sys.stderr)

    return show


def _report(report: chain.Report, seconds: float, source: str) -> int:
    print(file=sys.stderr)
    if report.ok:
        print(
            f"jisr audit: {source}: VALID — {report.records:,} records in {report.nodes} chains,"
            f" {report.checkpoints:,} signed checkpoints, {seconds:.1f} s"
        )
        return EXIT_VALID
    print(f"jisr audit: {source}: ALTERED — {len(report.findings)} finding(s):")
    for finding in report.findings:
        where = f"record {finding.node}:{finding.seq}" if finding.node else finding.where
        print(f"  {finding.kind}: {where}: {finding.detail}")
    return EXIT_ALTERED


def run(args: argparse.Namespace) -> int:
    """Run the action; anything that stops it before an answer is one line and exit 2."""
    if getattr(args, "remote", None) is not None:
        return trail.run(args, args.pki_dir or DEFAULT_PKI)
    try:
        return _run(args)
    except _RefusedError as exc:
        why = str(exc)
    except _unreadable() as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    print(f"jisr audit {args.action}: {why}", file=sys.stderr)
    return EXIT_NOT_CHECKED


def _unreadable() -> tuple[type[BaseException], ...]:
    """What a store, bundle or key file that cannot be read raises. psycopg's errors are
    included only once the driver is loaded (an embedded deployment never loads it; until
    it is loaded none of its errors can be raised)."""
    kinds: tuple[type[BaseException], ...] = (
        OSError,  # missing or unreadable files, a database that does not answer
        ValueError,  # malformed JSON or keys, an unsupported database URL
        sqlite3.Error,
        VerifyProcessError,  # a verifying process died
        AuditTrailMissingError,
        AuditSchemaTooOldError,
        SchemaTooNewError,
    )
    psycopg = sys.modules.get("psycopg")
    return (*kinds, psycopg.Error) if psycopg is not None else kinds


def _run(args: argparse.Namespace) -> int:
    if args.action == "verify" and args.bundle is not None:
        return _verify_bundle(args)
    if args.action == "witness":
        return _witness(args)
    if args.action == "check-proof":
        return audit_proof.run(args)
    config = store_config(args)
    if args.action == "prune":
        return _prune(config, args)
    if args.action == "export":
        return _export(config, args)
    return _verify_store(config, args.jobs or cpus.available())


def _verify_bundle(args: argparse.Namespace) -> int:
    started = time.monotonic()
    pinned = _pinned_jwks(args.jwks) if args.jwks else None
    path = _bundle_dir(args.bundle)
    if (args.witness_log is None) != (args.witness_jwks is None):
        raise _RefusedError("--witness-log and --witness-jwks go together")
    log = witness.read_log(args.witness_log) if args.witness_log is not None else []
    if args.witness_log is not None and not log:
        raise _RefusedError(f"{args.witness_log}: no witnessed checkpoint")
    keys = _pinned_jwks(args.witness_jwks) if args.witness_jwks is not None else {}
    report = bundle.verify_bundle(path, progress=_progress("verifying"), jwks=pinned)
    if log:
        found = witness.check_signatures(log, keys)
        try:
            records, checkpoints, _, _ = bundle.read_bundle(path)
            found += witness.against_bundle(log, records, checkpoints)
        except bundle.BundleError:
            pass  # the bundle's own findings say what is wrong; it is not VALID anyway
        report = chain.Report(
            report.ok and not found,
            report.records,
            report.checkpoints,
            report.nodes,
            report.findings + found,
            report.chains,
        )
    return _report(report, time.monotonic() - started, str(path))


def _witness(args: argparse.Namespace) -> int:
    """Countersign a verified bundle's checkpoints into the witness's log."""
    path = _bundle_dir(args.bundle)
    report = bundle.verify_bundle(path, jwks=_pinned_jwks(args.jwks))
    if not report.ok:
        print(f"jisr audit witness: {path}: the bundle does not verify; nothing countersigned")
        return _report(report, 0.0, str(path))
    records, checkpoints, _, _ = bundle.read_bundle(path)
    log = witness.read_log(args.log)
    contradicted = [f for f in witness.against_bundle(log, records, checkpoints) if f.node]
    for finding in contradicted:
        print(
            f"jisr audit witness: {finding.node}:{finding.seq}: {finding.detail}",
            file=sys.stderr,
        )
    if contradicted:
        return EXIT_ALTERED
    own = Credentials.from_pki(args.pki_dir or DEFAULT_PKI, args.institution).signer
    signer = witness.Signer(own.key, own.kid, own.alg, args.institution)
    now = dt.datetime.now(dt.UTC)
    seen = {(w.node, w.seq) for w in log}
    new = [
        witness.countersign(cp, signer, now) for cp in checkpoints if (cp.node, cp.seq) not in seen
    ]
    witness.append_log(args.log, new)
    print(
        f"jisr audit witness: {path}: {len(new)} checkpoint(s) countersigned by"
        f" {args.institution} into {args.log} ({len(checkpoints) - len(new)} already witnessed)"
    )
    return EXIT_VALID


def _verify_store(config: Config, jobs: int) -> int:
    """Each node's chain in a process of its own, up to `jobs` at a time."""
    started = time.monotonic()
    jwks = pki.gateway_jwks(config.pki_dir)
    total = [0]

    def node_done(node: str, records: int) -> None:
        total[0] += records
        rate = total[0] / max(time.monotonic() - started, 1e-9)
        print(
            f"verifying: {node} done ({records:,} records); {total[0]:,} so far, {rate:,.0f}/s",
            file=sys.stderr,
        )

    state_dir = config.state_dir or config.data_dir
    report = verify_store(config.database_url, state_dir, jwks, jobs=jobs, progress=node_done)
    return _report(report, time.monotonic() - started, f"audit store {_where(config)}")


def _jobs(text: str) -> int:
    """--jobs: a whole number of processes, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def _bundle_dir(path: Path) -> Path:
    """The bundle to verify, refused before verification when it cannot be one: a
    mistyped path must say so, not report the trail ALTERED."""
    if not path.exists():
        raise _RefusedError(f"{path}: no such bundle directory")
    if not path.is_dir():
        raise _RefusedError(f"{path}: not a bundle directory (unpack an archived bundle first)")
    if not (path / bundle.MANIFEST).is_file():
        raise _RefusedError(f"{path}: not a bundle: it holds no {bundle.MANIFEST}")
    return path


def _pinned_jwks(path: Path) -> dict[str, Any]:
    """The --jwks file, which must be a JWKS: a bad one verifies nothing."""
    try:
        jwks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _RefusedError(f"--jwks: {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _RefusedError(f"--jwks: {path}: not readable as JSON ({exc})") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise _RefusedError(f"--jwks: {path}: not a JWKS (no 'keys' array)")
    return jwks


def _day(flag: str, text: str) -> dt.date:
    """A YYYY-MM-DD flag value (only that form: fromisoformat also takes 20261201 or
    2026-W49, which a reader of the bundle's manifest would not expect)."""
    try:
        if _DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise _RefusedError(f"{flag}: {text!r} is not a date (YYYY-MM-DD)")


def _export_range(args: argparse.Namespace) -> tuple[int, int]:
    """[since, until) in microseconds from --from and --to, both days included; checked
    before the store is opened, with --out, so a bad range writes nothing."""
    first, last = _day("--from", args.since), _day("--to", args.until)
    if first > last:
        raise _RefusedError(f"--from {args.since} is after --to {args.until}")
    if args.out.exists():
        raise _RefusedError(f"--out: {args.out} already exists (name a new directory)")
    return _day_us(first), _day_us(last + dt.timedelta(days=1))


def _day_us(day: dt.date) -> int:
    moment = dt.datetime.combine(day, dt.time(), dt.UTC)
    return int(moment.timestamp() * 1_000_000)


def _export(config: Config, args: argparse.Namespace) -> int:
    started = time.monotonic()
    window = _export_range(args)
    store = _store(config, read_only=True)
    try:
        summary = _write_slice(store, pki.gateway_jwks(config.pki_dir), args, window)
    finally:
        store.close()
    print(file=sys.stderr)
    print(
        f"jisr audit: wrote {args.out}: {summary.records:,} records,"
        f" {summary.checkpoints:,} checkpoints, {time.monotonic() - started:.1f} s"
    )
    return 0


def _write_slice(
    store: AuditStore, jwks: dict[str, Any], args: argparse.Namespace, window: tuple[int, int]
) -> bundle.BundleSummary:
    """The bundle of [since, until): each chain from its last checkpoint before `since`,
    so that the slice is anchored by a signature and verifies alone."""
    since, until = window
    checkpoints = store.checkpoints()
    anchors = _anchors(checkpoints, since)
    last = _last_before(store.records(), until)
    records = (r for r in store.records() if anchors.get(r.node, 0) < r.seq <= last.get(r.node, 0))
    kept = [
        cp
        for cp in checkpoints
        if cp.node in last
        and (cp.kind == "prune" or anchors.get(cp.node, 0) <= cp.seq <= last[cp.node])
    ]
    return bundle.write_bundle(
        args.out,
        records,
        kept,
        jwks,
        {"from": args.since, "to": args.until},
        progress=_progress("exporting"),
    )


def _anchors(checkpoints: list[Checkpoint], since: int) -> dict[str, int]:
    """Each node's last checkpoint at or before `since`: its slice starts right after."""
    anchors: dict[str, int] = {}
    for cp in checkpoints:
        if cp.at_us <= since and cp.seq >= anchors.get(cp.node, 0):
            anchors[cp.node] = cp.seq
    return anchors


def _last_before(records: Iterator[AuditRecord], until: int) -> dict[str, int]:
    """Each node's last seq before its first record at or after `until`: a chain is cut
    once, never skipped over, so a clock step cannot open a gap in the slice."""
    last: dict[str, int] = {}
    stopped: set[str] = set()
    for record in records:
        if record.node in stopped:
            continue
        if record.at_us >= until:
            stopped.add(record.node)
            continue
        last[record.node] = record.seq
    return last


def _retention_days(text: str) -> int:
    """--older-than-days as a whole number of at least MIN_RETENTION_DAYS: 0 or a negative
    number would delete (nearly) the whole trail."""
    if not _WHOLE.fullmatch(text) or int(text) < MIN_RETENTION_DAYS:
        raise _RefusedError(
            f"--older-than-days: {text!r} is not a whole number of days"
            f" of at least {MIN_RETENTION_DAYS}"
        )
    return int(text)


def _confirmed(days: int, before_us: int, where: str, yes: bool) -> bool:
    """--yes, or a 'y' typed on the terminal. Without a terminal to ask on, a prune
    without --yes is refused: a script must say it means to delete."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise _RefusedError("deleting audit records needs confirmation: pass --yes")
    cutoff = dt.datetime.fromtimestamp(before_us / 1_000_000, dt.UTC).strftime("%Y-%m-%d %H:%M")
    print(
        f"Delete every audit record older than {days} days (before {cutoff} UTC)"
        f" from {where}? [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _prune(config: Config, args: argparse.Namespace) -> int:
    days = _retention_days(args.older_than_days)
    _store(config, read_only=True).close()  # a trail must exist: pruning never creates one
    key, kid = pki.load_gateway_signing_key(config.pki_dir)
    before = int((time.time() - days * 86_400) * 1_000_000)
    if not _confirmed(days, before, _where(config), args.yes):
        raise _RefusedError("not confirmed: nothing deleted")
    store = _store(config, read_only=False)
    try:
        total = _prune_store(store, before, key, kid)
    finally:
        store.close()
    print(f"jisr audit: pruned {total:,} records older than {days} days")
    return 0


def _prune_store(store: AuditStore, before: int, key: Any, kid: str) -> int:
    """Prune every chain, each followed by its signed prune checkpoint; the total deleted."""
    total = 0
    for node in store.nodes():
        deleted, first_seq, first_prev = store.prune_before(before, node)
        if deleted == 0:
            continue
        total += deleted
        last_seq, last_hash = store.head(node)
        checkpoint = Checkpoint(
            node=node,
            seq=last_seq,
            hash=last_hash,
            at_us=int(time.time() * 1_000_000),
            kind="prune",
            first_seq=first_seq,
            first_prev_hash=first_prev,
        )
        store.append_checkpoint(chain.sign_checkpoint(checkpoint, key, kid))
    return total
