"""The audit trail's own costs, in-process: durable appends through an `AuditWriter` and
with `append_batch`, on SQLite and PostgreSQL; whole-trail verification of a SQLite trail
and three passes that split its time (docs/performance.md, "Audit trail"). Records look
like the gateway's unary ones; every loop is bounded in records and in seconds."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import INSTITUTION, UNARY_METHOD, UNARY_PURPOSE, clocked, percentile
from bench.procs import say
from gateway.audit import chain
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint, link
from gateway.audit.store import AuditStore, open_audit_store
from gateway.audit.store_common import COLUMN_LIST
from gateway.audit.verify_store import verify_store
from gateway.audit.writer import AuditWriter
from gateway.base.jws import body_hash
from gateway.security import pki
from gateway.server import checkpoint_signer
from tests.support import processes

if TYPE_CHECKING:
    from bench.run import Settings

Sign = Callable[[Checkpoint], Checkpoint]

FIELDS = ("programme", "eligible", "reasons", "threshold_version", "legal_reference", "as_of")
FIELDS_ALL = (*FIELDS, "score_band")
BASIS = "illustrative: demonstration institution, synthetic data only"
CHECKPOINT_EVERY = 1_000  # the gateway's default (gateway.config)
RAW_BATCH = 512  # the writer's max_batch
VERIFY_NODES = 2


def draft(node: str, i: int, at_us: int) -> AuditRecord:
    """Record i of `node`, unlinked: a permitted VerifyEligibility by DEMO, with a unique
    jti (the store's replay index would refuse a repeat) derived from (node, i)."""
    key = f"{node}/{i}".encode()
    digest = hashlib.sha256(key).digest()
    return AuditRecord(
        node=node,
        seq=0,
        at_us=at_us,
        trace_id="",
        requester=INSTITUTION,
        requester_sub="jisr-bench",
        method=UNARY_METHOD,
        purpose=UNARY_PURPOSE,
        basis=BASIS,
        subjects=(hashlib.sha256(digest).hexdigest(),),
        fields=FIELDS_ALL,
        decision="permit",
        reason="",
        rh=body_hash(key),
        sh=body_hash(digest[::-1]),
        jti=body_hash(digest)[:24],
        part=0,
        latency_us=250 + i % 200,
    )


def linked(head: tuple[int, str], drafts: Iterable[AuditRecord]) -> list[AuditRecord]:
    """`drafts` linked and sealed after `head` (the chain's last seq and hash)."""
    out: list[AuditRecord] = []
    seq, prev = head
    for d in drafts:
        out.append(record := link(seq, prev, d))
        seq, prev = record.seq, record.hash
    return out


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def through_writer(
    store: AuditStore, node: str, sign: Sign, *, count: int, threads: int, seconds: float
) -> dict[str, Any]:
    """`threads` threads appending `count` records in all through one AuditWriter, each
    append blocking until durable as an exchange does."""
    per_thread, start = max(1, count // threads), _now_us()
    drafts = [
        [draft(node, t * per_thread + i, start + i) for i in range(per_thread)]
        for t in range(threads)
    ]
    commits = [0, 0]  # the writer's append_batch calls (group commits), their records
    append_batch = store.append_batch

    def counted(records: Sequence[AuditRecord]) -> None:
        append_batch(records)
        commits[0] += 1
        commits[1] += len(records)

    # Counts the writer's commits on this store object only (removed below).
    setattr(store, "append_batch", counted)  # noqa: B010
    writer = AuditWriter(store, node, sign, checkpoint_every=CHECKPOINT_EVERY)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    deadline = time.monotonic() + seconds
    barrier = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        clock, mine = time.perf_counter, latencies[t]
        barrier.wait()
        for d in drafts[t]:
            if time.monotonic() > deadline:
                break
            began = clock()
            writer.append(d)
            mine.append(clock() - began)

    workers = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    try:
        for w in workers:
            w.start()
        barrier.wait()
        cpu0, began = time.process_time(), time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu0
    finally:
        writer.close()
        delattr(store, "append_batch")
    done = sorted(x for mine in latencies for x in mine)
    n = len(done)
    return {
        "threads": threads,
        "records": n,
        "seconds": round(elapsed, 3),
        "records_per_s": round(n / elapsed) if elapsed else 0,
        "commits": commits[0],
        "mean_batch": round(commits[1] / commits[0], 1) if commits[0] else 0.0,
        "append_p50_ms": round(percentile(done, 0.50) * 1e3, 2),
        "append_p99_ms": round(percentile(done, 0.99) * 1e3, 2),
        "cpu_us_per_record": round(cpu / n * 1e6, 1) if n else 0.0,
    }


def raw_batches(
    store: AuditStore, node: str, count: int, batch: int, seconds: float
) -> dict[str, Any]:
    """One thread, the store's `append_batch` with `batch`-record slices of a chain
    linked beforehand (linking is not timed)."""
    start = _now_us()
    records = linked((0, GENESIS), (draft(node, i, start + i * 1_000) for i in range(count)))
    deadline = time.monotonic() + seconds
    done, spent = 0, 0.0
    for i in range(0, len(records), batch):
        if time.monotonic() > deadline:
            break
        part = records[i : i + batch]
        began = time.perf_counter()
        store.append_batch(part)
        spent += time.perf_counter() - began
        done += len(part)
    return {
        "batch": batch,
        "records": done,
        "seconds": round(spent, 3),
        "records_per_s": round(done / spent) if spent else 0,
        "ms_per_batch": round(spent / max(1, -(-done // batch)) * 1e3, 2),
    }


def build_trail(path_dir: Path, records: int, sign: Sign, seconds: float) -> dict[str, Any]:
    """A SQLite trail of `records` records over VERIFY_NODES nodes, a signed checkpoint
    every CHECKPOINT_EVERY records of a node; chunks go to the nodes in turn, so a build
    cut short by `seconds` still leaves every node a whole number of chunks."""
    nodes = [f"bench-verify-{k}" for k in range(VERIFY_NODES)]
    heads = {node: (0, GENESIS) for node in nodes}
    per_node = records // VERIFY_NODES
    start, step = _now_us() - records * 1_000, VERIFY_NODES * 1_000
    began, deadline = time.perf_counter(), time.monotonic() + seconds
    built = checkpoints = 0
    complete = True
    with closing(open_audit_store(None, path_dir)) as store:
        for first in range(0, per_node, CHECKPOINT_EVERY):
            if time.monotonic() > deadline:
                complete = False
                break
            for k, node in enumerate(nodes):
                span = range(first, min(first + CHECKPOINT_EVERY, per_node))
                at = start + k * 1_000  # the nodes' records interleave, 1 ms apart
                chunk = linked(heads[node], (draft(node, i, at + i * step) for i in span))
                heads[node] = (chunk[-1].seq, chunk[-1].hash)
                store.append_batch(chunk)
                store.append_checkpoint(sign(Checkpoint(node, *heads[node], chunk[-1].at_us)))
                built += len(chunk)
                checkpoints += 1
    return {
        "records": built,
        "nodes": VERIFY_NODES,
        "checkpoints": checkpoints,
        "complete": complete,
        "seconds": round(time.perf_counter() - began, 1),
        "file_mb": round((path_dir / "audit.sqlite").stat().st_size / 2**20, 1),
    }


def _raw_rows(path: Path, *, chain: bool) -> int:
    """References: every row of audit_record, all its columns, in (node, seq) order, as
    Python tuples and nothing more (what any verifier in Python pays to read the trail);
    with `chain`, also SHA-256 of each row's fields joined and each prev_hash checked
    against the previous row's hash (not the canonical encoding: the floor under any
    verifier reading this file). The rows read."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        sha256 = hashlib.sha256
        prev_node, prev_hash, n = None, GENESIS, 0
        for row in conn.execute(f"SELECT {COLUMN_LIST} FROM audit_record ORDER BY node, seq"):
            n += 1
            if not chain:
                continue
            if row[0] != prev_node:
                prev_node, prev_hash = row[0], GENESIS
            sha256("\0".join(map(str, row[:19])).encode()).hexdigest()
            if row[18] != prev_hash:
                raise RuntimeError(f"bench trail broken at {row[0]}:{row[1]}")
            prev_hash = row[19]
    return n


def verify_trail(path_dir: Path, pki_dir: Path, expected: int) -> dict[str, Any]:
    """Time `jisr audit verify` as an operator runs it, a process per node (the figure);
    then the same `verify_store` from this process (its workers re-import this bench's
    main module: slower to start), `chain.verify` in one process, reading alone and the
    bare reference over the same file (in the page cache: it was just written)."""
    jwks = pki.gateway_jwks(pki_dir)
    command = processes.jisr("audit", "--data-dir", str(path_dir), "--pki-dir", str(pki_dir))
    ran, verify_s = clocked(
        lambda: subprocess.run(
            [*command, "verify", "--jobs", str(VERIFY_NODES)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env=processes.environment(),
        )
    )
    if ran.returncode != 0 or f"{expected:,} records" not in ran.stdout:
        raise RuntimeError(f"jisr audit verify: {ran.stdout.strip()} {ran.stderr.strip()[-300:]}")
    report, in_bench_s = clocked(lambda: verify_store(None, path_dir, jwks, jobs=VERIFY_NODES))
    with closing(open_audit_store(None, path_dir)) as store:
        alone, alone_s = clocked(lambda: chain.verify(store.records(), store.checkpoints(), jwks))
        for got in (report, alone):
            if not got.ok or got.records != expected:
                raise RuntimeError(
                    f"bench trail did not verify: {got.records} records, {got.findings[:3]}"
                )
        read, read_s = clocked(lambda: sum(1 for _ in store.records()))
        checkpoints, listed_s = clocked(store.checkpoints)
        _, checkpoints_s = clocked(lambda: [chain.verify_checkpoint(c, jwks) for c in checkpoints])
    fetched, fetch_s = clocked(lambda: _raw_rows(path_dir / "audit.sqlite", chain=False))
    bare, bare_s = clocked(lambda: _raw_rows(path_dir / "audit.sqlite", chain=True))
    million = 1_000_000 / expected if expected else 0.0
    return {
        "records": report.records,
        "checkpoints": report.checkpoints,
        "nodes": report.nodes,
        "seconds": round(verify_s, 2),
        "records_per_s": round(expected / verify_s) if verify_s else 0,
        "million_s": round(verify_s * million, 2),
        "in_bench_process_s": round(in_bench_s, 2),
        "one_process_s": round(alone_s, 2),
        "one_process_million_s": round(alone_s * million, 2),
        "read_records_s": round(read_s, 2),
        "read_records": read,
        "checkpoints_s": round(listed_s + checkpoints_s, 2),
        "fetch_rows_s": round(fetch_s, 2),
        "fetch_rows": fetched,
        "bare_chain_s": round(bare_s, 2),
        "bare_chain_records": bare,
        "bare_million_s": round(bare_s * million, 2),
    }


def measure(work: Path, pki_dir: Path, s: Settings, postgres_url: str | None) -> dict[str, Any]:
    """`s.audit_records` appends by `s.audit_threads` threads on a fresh SQLite store (and
    PostgreSQL's, with `postgres_url`), then the verification of `s.verify_records`."""
    sign = checkpoint_signer(pki_dir)
    count, threads, seconds = s.audit_records, s.audit_threads, s.step_seconds
    rows = []
    postgres = [("postgresql", postgres_url, work)] if postgres_url else []
    for backend, url, state in [("sqlite", None, work / "audit-appends"), *postgres]:
        with closing(open_audit_store(url, state)) as store:
            node = f"bench-writer-{backend}"
            w = through_writer(store, node, sign, count=count, threads=threads, seconds=seconds)
            r = raw_batches(store, f"bench-raw-{backend}", count, RAW_BATCH, seconds)
        rows.append({"backend": backend, "writer": w, "raw": r})
        say(
            f"    {backend}: AuditWriter, {w['threads']} threads, {w['records_per_s']:,}"
            f" records/s ({w['mean_batch']:.1f} per commit); append_batch({r['batch']})"
            f" {r['records_per_s']:,} records/s"
        )
    trail = work / "audit-verify"
    build = build_trail(trail, s.verify_records, sign, s.build_seconds)
    check = verify_trail(trail, pki_dir, build["records"])
    say(
        f"    verify: {check['records']:,} records (built in {build['seconds']:.1f} s, not"
        f" counted) in {check['seconds']:.2f} s -> 1,000,000 in {check['million_s']:.2f} s"
    )
    return {"count": count, "threads": threads, "appends": rows, "build": build, "verify": check}
