"""`jisr audit verify|export|prune`: a DPO's offline tools over the store or a bundle."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway import pki
from gateway.audit import bundle, chain
from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.store import AuditStore, open_audit_store
from gateway.config import Config
from gateway.config import load as load_config


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify, export and prune the audit trail")
    audit.add_argument("--config", type=Path, help="gateway TOML (for the stores)")
    audit.add_argument("--data-dir", type=Path, help="where audit.sqlite lives (default var)")
    audit.add_argument("--pki-dir", type=Path, help="for the gateway's public keys")
    actions = audit.add_subparsers(dest="action", required=True)
    verify = actions.add_parser("verify", help="recompute the chains and check checkpoints")
    verify.add_argument("bundle", type=Path, nargs="?", help="an exported bundle (offline)")
    verify.add_argument(
        "--jwks",
        type=Path,
        help="the gateway's published keys (`jisr keys export`); default: the bundle's copy",
    )
    export = actions.add_parser("export", help="write a self-contained evidence bundle")
    export.add_argument("--from", dest="since", required=True, help="YYYY-MM-DD (UTC)")
    export.add_argument("--to", dest="until", required=True, help="YYYY-MM-DD (UTC, inclusive)")
    export.add_argument("--out", type=Path, required=True)
    prune = actions.add_parser("prune", help="drop records older than the retention period")
    prune.add_argument("--older-than-days", type=int, required=True)
    audit.set_defaults(run=run)


def _config(args: argparse.Namespace) -> Config:
    env: dict[str, str] = {}
    if args.data_dir:
        env["JISR_DATA_DIR"] = str(args.data_dir)
    if args.pki_dir:
        env["JISR_PKI_DIR"] = str(args.pki_dir)
    return load_config(args.config, {**os.environ, **env})


def _store(config: Config) -> AuditStore:
    return open_audit_store(config.database_url, config.state_dir or config.data_dir)


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
        return 0
    print(f"jisr audit: {source}: ALTERED — {len(report.findings)} finding(s):")
    for finding in report.findings:
        where = f"record {finding.node}:{finding.seq}" if finding.node else finding.where
        print(f"  {finding.kind}: {where}: {finding.detail}")
    return 1


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.action == "verify" and args.bundle is not None:
        pinned = json.loads(args.jwks.read_text(encoding="utf-8")) if args.jwks else None
        report = bundle.verify_bundle(args.bundle, progress=_progress("verifying"), jwks=pinned)
        return _report(report, time.monotonic() - started, str(args.bundle))
    config = _config(args)
    jwks = pki.gateway_jwks(config.pki_dir)
    store = _store(config)
    try:
        if args.action == "verify":
            records = _counted(store.records(), _progress("verifying"))
            report = chain.verify(records, store.checkpoints(), jwks)
            return _report(report, time.monotonic() - started, "audit store")
        if args.action == "export":
            return _export(store, jwks, args, started)
        return _prune(store, config, args)
    finally:
        store.close()


def _counted(records: Any, progress: Any) -> Any:
    for done, record in enumerate(records, start=1):
        if done % 10_000 == 0:
            progress(done)
        yield record


def _day_us(text: str, end: bool) -> int:
    day = dt.date.fromisoformat(text)
    moment = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time(), dt.UTC)
    return int(moment.timestamp() * 1_000_000)


def _export(store: AuditStore, jwks: dict[str, Any], args: argparse.Namespace, t0: float) -> int:
    since, until = _day_us(args.since, False), _day_us(args.until, True)
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
    summary = bundle.write_bundle(
        args.out,
        records,
        kept,
        jwks,
        {"from": args.since, "to": args.until},
        progress=_progress("exporting"),
    )
    print(file=sys.stderr)
    print(
        f"jisr audit: wrote {args.out}: {summary.records:,} records,"
        f" {summary.checkpoints:,} checkpoints, {time.monotonic() - t0:.1f} s"
    )
    return 0


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


def _prune(store: AuditStore, config: Config, args: argparse.Namespace) -> int:
    key, kid = pki.load_gateway_signing_key(config.pki_dir)
    before = int((time.time() - args.older_than_days * 86_400) * 1_000_000)
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
    print(f"jisr audit: pruned {total:,} records older than {args.older_than_days} days")
    return 0
