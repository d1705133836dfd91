"""Audit-chain arithmetic: sign and verify checkpoints, verify whole chains (pure, no I/O).

`verify` streams records (grouped by node, ascending seq, as stored), keeps per-node state
only, and names the FIRST bad record of each node: once a node's chain is broken, what
follows in it cannot be trusted to say anything more precise. What it proves and what it
cannot (e.g. a tail after the last checkpoint can be cut undetectably) is written down in
docs/audit-format.md.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)

from gateway.audit import merkle
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint, digest_or_error
from gateway.security.trust import key_from_jwk

CHECKPOINT_TYP = "jisr-checkpoint+jwt"
CHECKPOINT_ALG = "ES256"
CHECKPOINT_KINDS = frozenset({"periodic", "prune"})

# Finding kinds: what a DPO is told went wrong.
MODIFIED = "modified"  # a record's content does not hash to its stored hash
MISSING = "missing"  # a seq gap, or a chain that starts without a permitted start
INSERTED = "inserted"  # a record that does not continue the chain, or a repeated seq
REORDERED = "reordered"  # records present but out of seq order
TRUNCATED = "truncated"  # the chain ends before a signed checkpoint's seq
REWRITTEN = "rewritten"  # the record at a checkpoint's seq does not have the signed hash
MALFORMED = "malformed"  # a record with no canonical encoding (NUL in a field, bad types)
UNGROUPED = "ungrouped"  # a node's records are not contiguous in the stream
CHECKPOINT = "checkpoint"  # a checkpoint that does not verify, or two that disagree
BUNDLE = "bundle"  # a bundle's file is missing, altered or unreadable (bundle.py)

RECORD_KINDS = frozenset(
    {MODIFIED, MISSING, INSERTED, REORDERED, TRUNCATED, REWRITTEN, MALFORMED, UNGROUPED}
)

# How a chain may start: at seq 1 after GENESIS, right after a signed prune checkpoint's
# first_prev_hash, or (only when anchors are allowed: slices) right after any signed
# checkpoint of its node.
START_GENESIS = "genesis"
START_PRUNE = "prune"
START_ANCHOR = "anchor"

_NO_CHECKPOINT = 1 << 63  # beyond any seq
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong: the first bad record of a node's chain, a checkpoint, or a file."""

    node: str
    seq: int
    kind: str
    detail: str
    where: str = ""  # "records.jsonl:1234" when found in a bundle


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What was verified of one node's chain."""

    node: str
    records: int
    first_seq: int
    last_seq: int
    start: str  # START_GENESIS, START_PRUNE, START_ANCHOR, or "" when the start is bad
    signed_through: int  # highest seq whose hash a valid checkpoint signs (0 if none)


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    records: int
    checkpoints: int
    nodes: int
    findings: list[Finding]
    chains: list[ChainSummary] = field(default_factory=list)


# --- checkpoints ---------------------------------------------------------------------


def sign_checkpoint(cp: Checkpoint, key: EllipticCurvePrivateKey, kid: str) -> Checkpoint:
    """`cp` with `signature` set: a compact JWS (ES256) whose payload is `cp.claims()`."""
    if not isinstance(key.curve, SECP256R1):
        raise ValueError("checkpoints are signed with ES256: the key must be on P-256")
    token = jwt.encode(
        cp.claims(),
        key,
        algorithm=CHECKPOINT_ALG,
        headers={"typ": CHECKPOINT_TYP, "kid": kid},
    )
    return replace(cp, signature=token)


_Keys = dict[str, EllipticCurvePublicKey | str]  # kid -> key, or why the JWK is unusable


def _parse_jwks(jwks: Mapping[str, Any]) -> _Keys:
    keys: _Keys = {}
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        return keys
    for jwk in entries:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            key, alg = key_from_jwk(jwk)
        except (ValueError, KeyError, TypeError) as exc:
            keys[kid] = f"key {kid!r} of the JWKS is unusable ({exc})"
            continue
        if alg != CHECKPOINT_ALG or not isinstance(key, EllipticCurvePublicKey):
            keys[kid] = f"key {kid!r} of the JWKS is not an {CHECKPOINT_ALG} key"
        else:
            keys[kid] = key
    return keys


def _same(signed: object, stored: object) -> bool:
    return type(signed) is type(stored) and signed == stored


def _check_checkpoint(cp: Checkpoint, keys: _Keys) -> str | None:
    if not cp.signature:
        return "not signed"
    try:
        header = jwt.get_unverified_header(cp.signature)
    except jwt.PyJWTError:
        return "the signature is not a compact JWS"
    if header.get("typ") != CHECKPOINT_TYP:
        return f"JWS typ is {header.get('typ')!r}, not {CHECKPOINT_TYP!r}"
    if header.get("alg") != CHECKPOINT_ALG:
        return f"JWS alg is {header.get('alg')!r}, not {CHECKPOINT_ALG}"
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return f"signed by key {kid!r}, which is not in the gateway's JWKS"
    if isinstance(key, str):
        return key
    try:
        payload = jwt.PyJWS().decode(cp.signature, key, algorithms=[CHECKPOINT_ALG])
    except jwt.PyJWTError as exc:
        return f"the signature does not verify with key {kid!r} ({exc})"
    return _check_claims(cp, payload)


def _check_claims(cp: Checkpoint, payload: bytes) -> str | None:
    try:
        signed = json.loads(payload)
    except ValueError:
        return "the signed payload is not JSON"
    if not isinstance(signed, dict):
        return "the signed payload is not a JSON object"
    stored = cp.claims()
    differ = sorted(
        name
        for name in stored.keys() | signed.keys()
        if name not in signed or name not in stored or not _same(signed[name], stored[name])
    )
    if differ:
        shown = ", ".join(
            f"{name} (signed {signed.get(name)!r}, stored {stored.get(name)!r})" for name in differ
        )
        return f"its fields differ from what was signed: {shown}"
    if cp.kind not in CHECKPOINT_KINDS:
        return f"unknown kind {cp.kind!r}"
    if cp.seq < 0:
        return "negative seq"
    if cp.kind == "prune" and not 1 <= cp.first_seq <= cp.seq + 1:
        return f"prune first_seq {cp.first_seq} is not within 1..{cp.seq + 1}"
    return _check_tree(cp)


def _check_tree(cp: Checkpoint) -> str | None:
    """A signed Merkle root must be a hash over a range of the chain that ends at `seq`."""
    if not cp.root:
        return None if cp.root_first == 0 else "root_first without a root"
    if not _HEX64.fullmatch(cp.root):
        return "its root is not 64 lowercase hex digits"
    if cp.kind != "periodic":
        return f"a {cp.kind} checkpoint signs a Merkle root"
    if not 1 <= cp.root_first <= cp.seq:
        return f"root_first {cp.root_first} is not within 1..{cp.seq}"
    return None


def verify_checkpoint(cp: Checkpoint, jwks: Mapping[str, Any]) -> str | None:
    """None if `cp.signature` verifies with an ES256 key of `jwks` (the gateway's public
    JWKS) and signs exactly `cp`'s fields; otherwise why not."""
    return _check_checkpoint(cp, _parse_jwks(jwks))


# --- what valid checkpoints assert ---------------------------------------------------


@dataclass(slots=True)
class _Point:
    """The hash of record node:seq is `hash`, as `source` signs it."""

    hash: str
    source: str
    start: str  # how a chain may start right after this seq


@dataclass(frozen=True, slots=True)
class _Tree:
    """`source` signs `root` as the Merkle root of records node:first..node:seq."""

    first: int
    seq: int
    root: str
    source: str


def _assert(
    node: str,
    points: dict[int, _Point],
    seq: int,
    point: _Point,
    findings: list[Finding],
) -> None:
    known = points.get(seq)
    if known is None:
        points[seq] = point
    elif known.hash != point.hash:
        findings.append(
            Finding(
                node,
                seq,
                CHECKPOINT,
                f"{point.source} and {known.source} sign different hashes for {node}:{seq}",
            )
        )
    elif point.start != START_ANCHOR and known.start == START_ANCHOR:
        known.start = point.start


def _index(
    checkpoints: Iterable[Checkpoint],
    keys: _Keys,
    findings: list[Finding],
    trees: dict[str, list[_Tree]],
) -> tuple[int, dict[str, dict[int, _Point]]]:
    """Verify every checkpoint; per node, the hashes the valid ones sign, by seq (and, in
    `trees`, the Merkle roots they sign, by seq)."""
    count = 0
    by_node: dict[str, dict[int, _Point]] = {}
    for cp in checkpoints:
        count += 1
        reason = _check_checkpoint(cp, keys)
        if reason is not None:
            findings.append(
                Finding(cp.node, cp.seq, CHECKPOINT, f"checkpoint {cp.node}:{cp.seq}: {reason}")
            )
            continue
        points = by_node.get(cp.node)
        if points is None:
            points = by_node[cp.node] = {0: _Point(GENESIS, "the genesis", START_GENESIS)}
        label = "prune checkpoint" if cp.kind == "prune" else "checkpoint"
        source = f"{label} {cp.node}:{cp.seq}"
        _assert(cp.node, points, cp.seq, _Point(cp.hash, source, START_ANCHOR), findings)
        if cp.root:
            trees.setdefault(cp.node, []).append(_Tree(cp.root_first, cp.seq, cp.root, source))
        if cp.kind == "prune":
            first = _Point(cp.first_prev_hash, source, START_PRUNE)
            _assert(cp.node, points, cp.first_seq - 1, first, findings)
    return count, by_node


_GENESIS_ONLY: dict[int, _Point] = {0: _Point(GENESIS, "the genesis", START_GENESIS)}


# --- chains --------------------------------------------------------------------------


def _permitted(point: _Point, anchors: bool) -> bool:
    return anchors or point.start != START_ANCHOR


def _span(node: str, first: int, last: int) -> str:
    if first == last:
        return f"record {node}:{first} is missing"
    return f"records {node}:{first}..{node}:{last} are missing"


class _Chain:
    """Verifies one node's records; `finding` is its first bad record, if any."""

    def __init__(
        self, node: str, points: dict[int, _Point], anchors: bool, trees: list[_Tree]
    ) -> None:
        self.node = node
        self.points = points
        self.anchors = anchors
        self.finding: Finding | None = None
        # Merkle roots still to check, by seq; the hashes of records from window_start on
        # that one of them may cover (at most one writer's interval is held).
        self.trees = sorted(trees, key=attrgetter("seq", "first"), reverse=True)
        # earliest[i]: the first record any of trees[0..i] covers (trees are popped from
        # the end, so the roots still to check always begin at earliest[len(trees) - 1]).
        self.earliest = list(itertools.accumulate((t.first for t in self.trees), min))
        self.window: list[str] = []
        self.window_start = 0
        self.tree_findings: list[Finding] = []
        self.records = 0
        self.first_seq = 0
        self.last_seq = 0
        self.start = ""
        self.signed_through = 0

    def fail(self, seq: int, kind: str, detail: str) -> None:
        self.finding = Finding(self.node, seq, kind, detail)

    def run(self, links: Iterator[Link]) -> None:
        node = self.node
        first = next(links)
        self.records = 1
        self.first_seq = self.last_seq = first[0]
        # The next seq a valid checkpoint signs, and the rest in ascending order.
        pending = iter(sorted(s for s in self.points if s >= first[0]))
        begun = self._begin(first, pending)
        if begun is None:
            self.records += sum(1 for _ in links)
            return
        next_cp, collect_from = begun
        keep = self.window.append
        expect = first[0] + 1
        prev = first[2]
        extra = 0  # records read ahead to tell a reordering from a deletion
        for link in links:
            # The hot path: ~1M records/s. Rare outcomes leave the loop.
            seq, prev_hash, stored, digest = link
            if digest != stored:
                self._bad_digest(seq, digest)
                break
            if seq != expect:
                extra = self._out_of_order(link, expect, prev, links)
                break
            if prev_hash != prev:
                self.fail(
                    seq,
                    INSERTED,
                    f"record {node}:{seq} does not continue the chain: its prev_hash is not"
                    f" the hash of {node}:{seq - 1} (inserted, or the chain was re-hashed)",
                )
                break
            if seq >= collect_from:
                keep(stored)
            if seq == next_cp:
                if not self._at_checkpoint(seq, stored):
                    break
                collect_from = self._check_trees(seq)
                next_cp = next(pending, _NO_CHECKPOINT)
            prev = stored
            expect = seq + 1
        if self.finding is not None:
            # Counted, not checked: after its first bad record, a chain proves nothing.
            self.records = expect - first[0] + 1 + extra + sum(1 for _ in links)
            return
        self.records = expect - first[0]
        self.last_seq = expect - 1
        self._end()

    def _bad_digest(self, seq: Any, digest: str | Exception) -> None:
        """A record whose content does not hash to its stored hash, or has no canonical
        form (`digest` is then why)."""
        if isinstance(digest, Exception):
            self.fail(seq, MALFORMED, f"record {self.node}:{seq} has no canonical form: {digest}")
        else:
            self.fail(seq, MODIFIED, f"record {self.node}:{seq} was modified (hash mismatch)")

    def _start(self, first: Link) -> bool:
        node = self.node
        seq, prev_hash, stored, digest = first
        if digest != stored:
            self._bad_digest(seq, digest)
            return False
        if not isinstance(seq, int) or seq < 1:
            self.fail(seq, MALFORMED, f"record {node}:{seq}: seq must be 1 or more")
            return False
        point = self.points.get(seq - 1)
        if point is not None and _permitted(point, self.anchors):
            if prev_hash != point.hash:
                if point.start == START_GENESIS:
                    why = "its prev_hash is not empty (the genesis)"
                else:
                    why = f"its prev_hash is not the hash {point.source} signs for {node}:{seq - 1}"
                self.fail(seq, INSERTED, f"record {node}:{seq} does not start the chain: {why}")
                return False
            self.start = point.start
            return True
        below = max(
            s for s, p in self.points.items() if s < seq - 1 and _permitted(p, self.anchors)
        )
        allowed = "at 1 or right after a signed prune checkpoint"
        if self.anchors:
            allowed = "at 1 or right after a signed checkpoint included with it"
        self.fail(
            below + 1,
            MISSING,
            f"{_span(node, below + 1, seq - 1)}: the chain starts at {node}:{seq},"
            f" but it may only start {allowed}",
        )
        return False

    def _at_checkpoint(self, seq: int, stored: str) -> bool:
        point = self.points[seq]
        if stored != point.hash:
            since = max(self.signed_through + 1, self.first_seq)
            self.fail(
                seq,
                REWRITTEN,
                f"record {self.node}:{seq} does not have the hash {point.source} signs: records"
                f" {self.node}:{since}..{self.node}:{seq} were altered and re-hashed, or the"
                " chain was truncated and appended again",
            )
            return False
        self.signed_through = seq
        return True

    def _begin(self, first: Link, pending: Iterator[int]) -> tuple[int, int] | None:
        """Check the first record's place; (the next checkpoint's seq, where the window
        of hashes starts), or None when the chain is bad from its first record."""
        if not self._start(first):
            return None
        seq, stored = first[0], first[2]
        next_cp = next(pending, _NO_CHECKPOINT)
        collect_from = self._collect_from(seq)
        if seq >= collect_from:
            self.window.append(stored)
        if next_cp == seq:
            if not self._at_checkpoint(seq, stored):
                return None
            collect_from = self._check_trees(seq)
            next_cp = next(pending, _NO_CHECKPOINT)
        return next_cp, collect_from

    def _collect_from(self, first_seq: int) -> int:
        """Where the window of hashes starts: the first record the next root covers."""
        while self.trees and self.trees[-1].seq < first_seq:
            self.trees.pop()  # ends before the records given: nothing of it to check
        if not self.trees:
            return _NO_CHECKPOINT
        self.window_start = max(first_seq, self.earliest[len(self.trees) - 1])
        return self.window_start

    def _check_trees(self, seq: int) -> int:
        """Check the roots signed at `seq` against the window (those that begin before the
        records given cannot be, as in a slice), then drop what no later root covers;
        where the window starts now."""
        while self.trees and self.trees[-1].seq == seq:
            tree = self.trees.pop()
            if tree.first < self.window_start:
                continue
            if merkle.root(self.window[tree.first - self.window_start :]) != tree.root:
                self.tree_findings.append(
                    Finding(
                        self.node,
                        seq,
                        CHECKPOINT,
                        f"{tree.source} signs a Merkle root that is not that of records"
                        f" {self.node}:{tree.first}..{self.node}:{seq}",
                    )
                )
        if not self.trees:
            self.window.clear()
            return _NO_CHECKPOINT
        start = max(self.window_start, self.earliest[len(self.trees) - 1])
        del self.window[: start - self.window_start]
        self.window_start = start
        return start

    def _out_of_order(self, link: Link, expect: int, prev: str, links: Iterator[Link]) -> int:
        """Name what a seq other than `expect` means; how many records were read ahead."""
        node, seq = self.node, link[0]
        if seq > expect:
            following = next(links, None)
            if following is not None and following[0] == expect:
                self.fail(
                    expect,
                    REORDERED,
                    f"record {node}:{expect} comes after {node}:{seq}: records are out of order",
                )
            else:
                self.fail(expect, MISSING, _span(node, expect, seq - 1))
            return 0 if following is None else 1
        if seq == expect - 1 and link[2] == prev:
            self.fail(seq, INSERTED, f"record {node}:{seq} appears twice")
        else:
            self.fail(
                seq,
                INSERTED,
                f"record {node}:{seq} comes after {node}:{expect - 1}: a repeated seq"
                " (inserted or reordered)",
            )
        return 0

    def _end(self) -> None:
        last_signed = max(self.points)
        if last_signed > self.last_seq:
            self.fail(
                self.last_seq + 1,
                TRUNCATED,
                f"{_span(self.node, self.last_seq + 1, last_signed)}: the chain ends at"
                f" {self.node}:{self.last_seq}, before {self.points[last_signed].source}",
            )

    def summary(self) -> ChainSummary:
        return ChainSummary(
            self.node,
            self.records,
            self.first_seq,
            self.last_seq,
            self.start if self.finding is None else "",
            self.signed_through,
        )


def _without_records(
    node: str, points: dict[int, _Point], anchors: bool, findings: list[Finding]
) -> None:
    """A node with valid checkpoints but no records: fine only if its chain may start
    after its last signed seq (all of it pruned, or a slice anchored there)."""
    start = max(s for s, p in points.items() if _permitted(p, anchors))
    last_signed = max(points)
    if last_signed > start:
        findings.append(
            Finding(
                node,
                start + 1,
                TRUNCATED,
                f"{_span(node, start + 1, last_signed)}: no record of {node} is present,"
                f" but {points[last_signed].source} is signed",
            )
        )


# A record as the chain check reads it: (seq, prev_hash, hash, digest), where digest is
# the hex SHA-256 of its canonical encoding, or the error that says it has none. Links
# come from records (`record_links`) or straight from a store's rows
# (store_common.row_links), which spares building a record per row when verifying
# millions.
Link = tuple[Any, Any, Any, "str | Exception"]


def record_links(records: Iterable[AuditRecord]) -> Iterator[Link]:
    """The links of `records`, in the order given."""
    for r in records:
        yield r.seq, r.prev_hash, r.hash, digest_or_error(r)


@dataclass(frozen=True, slots=True)
class CheckpointIndex:
    """What the valid checkpoints sign, per node: the hashes by seq and the Merkle roots;
    `findings` names the checkpoints that do not verify or disagree."""

    count: int
    points: dict[str, dict[int, _Point]]
    trees: dict[str, list[_Tree]]
    findings: list[Finding]

    def only(self, node: str) -> CheckpointIndex:
        """This index cut down to one node (what a process verifying it needs)."""
        points = {node: self.points[node]} if node in self.points else {}
        trees = {node: self.trees[node]} if node in self.trees else {}
        return CheckpointIndex(self.count, points, trees, [])


def index_checkpoints(
    checkpoints: Iterable[Checkpoint], jwks: Mapping[str, Any]
) -> CheckpointIndex:
    """Verify every checkpoint against `jwks` once, for all the chains they sign."""
    findings: list[Finding] = []
    trees: dict[str, list[_Tree]] = {}
    count, by_node = _index(checkpoints, _parse_jwks(jwks), findings, trees)
    return CheckpointIndex(count, by_node, trees, findings)


@dataclass(frozen=True, slots=True)
class NodeResult:
    """One node's chain verified: what it holds and what is wrong with it (no summary
    for records of a node that came after another node's: counted, not verified)."""

    summary: ChainSummary | None
    records: int
    findings: list[Finding]


def verify_node(
    node: str, links: Iterable[Link], index: CheckpointIndex, *, anchors: bool = False
) -> NodeResult | None:
    """Verify one node's chain from its links in ascending seq (None if it has none)."""
    links = iter(links)
    first = next(links, None)
    if first is None:
        return None
    chain = _Chain(node, index.points.get(node, _GENESIS_ONLY), anchors, index.trees.get(node, []))
    chain.run(itertools.chain((first,), links))
    findings = [] if chain.finding is None else [chain.finding]
    return NodeResult(chain.summary(), chain.records, findings + chain.tree_findings)


def assemble(
    index: CheckpointIndex, results: Iterable[NodeResult], *, anchors: bool = False
) -> Report:
    """The report over the nodes' results (in the order given) and the checkpoints: a
    node some checkpoint signs for but without a record is checked here."""
    findings = list(index.findings)
    chains: list[ChainSummary] = []
    total = 0
    for result in results:
        if result.summary is not None:
            chains.append(result.summary)
        total += result.records
        findings.extend(result.findings)
    seen = {c.node for c in chains}
    for node in sorted(index.points.keys() - seen):
        _without_records(node, index.points[node], anchors, findings)
    return Report(not findings, total, index.count, len(seen), findings, chains)


def verify(
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    jwks: Mapping[str, Any],
    *,
    anchors: bool = False,
) -> Report:
    """Recompute every node's chain and check it against the valid signed checkpoints.

    `records` must come grouped by node, each node's in ascending seq (as stored); it is
    consumed once, holding per-node state only. A chain may start at seq 1 (prev_hash
    GENESIS), or right after a valid prune checkpoint (first_seq, first_prev_hash); with
    `anchors=True` (a slice of the trail, e.g. a bundle) also right after ANY valid
    checkpoint of its node. Leave it False over a whole store: there an anchored start
    means records before it were deleted.
    """
    index = index_checkpoints(checkpoints, jwks)
    results: list[NodeResult] = []
    seen: set[str] = set()
    for node, group in itertools.groupby(records, attrgetter("node")):
        if node in seen:
            n = sum(1 for _ in group)
            detail = (
                f"{n} more record(s) of {node} come after another node's: records must"
                " be grouped by node"
            )
            results.append(NodeResult(None, n, [Finding(node, 0, UNGROUPED, detail)]))
            continue
        seen.add(node)
        result = verify_node(node, record_links(group), index, anchors=anchors)
        if result is not None:
            results.append(result)
    return assemble(index, results, anchors=anchors)
